"""A real Kubernetes API server for the manifest tests: kube-apiserver and etcd built from their Go
modules (native/build.sh, versions in .env), started inside a private network namespace and
driven with the kubectl built beside them.

No controllers or kubelets run: nothing is scheduled, and what a controller would make (the
namespace's `default` ServiceAccount, EndpointSlices) the tests create themselves. Admission
(Pod Security included) and validation are the real ones.
"""

import json
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from nativestack.paths import binaries
from nativestack.processes import Process, start, wait_until

from .netns import NetworkNamespace

ADMIN = "admin"


@dataclass
class ApiServer:
    netns: NetworkNamespace
    etcd: Process
    apiserver: Process
    url: str
    workdir: Path
    admin_token: str

    def kubeconfig(self, name: str, token: str) -> Path:
        """A kubeconfig that authenticates with `token` (a ServiceAccount's, or the admin's)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            # The server's certificate is self-signed for this session (--cert-dir).
            "clusters": [{"name": "test", "cluster": {"server": self.url, "insecure-skip-tls-verify": True}}],
            "users": [{"name": name, "user": {"token": token}}],
            "contexts": [{"name": name, "context": {"cluster": "test", "user": name}}],
            "current-context": name,
        }
        path = self.workdir / f"kubeconfig-{name}"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def kubectl(
        self, *args: str, stdin: str | None = None, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """kubectl inside the namespace, as the admin unless another kubeconfig is given."""
        config = kubeconfig or self.kubeconfig(ADMIN, self.admin_token)
        argv = [*self.netns.launcher(), str(binaries()["KUBECTL"]), f"--kubeconfig={config}", *args]
        return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120, check=False)

    def stop(self) -> None:
        for process in (self.apiserver, self.etcd):
            process.stop()


def _service_account_key(workdir: Path) -> Path:
    key = workdir / "service-account.key"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    return key


def start_api_server(workdir: Path, netns: NetworkNamespace) -> ApiServer:
    """etcd and kube-apiserver in `netns`, the API server advertised on its first address."""
    address = netns.addresses[0]
    etcd_url, peer_url = "http://127.0.0.1:2379", "http://127.0.0.1:2380"
    etcd = start(
        "etcd",
        [
            *netns.launcher(),
            str(binaries()["ETCD"]),
            f"--data-dir={workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
        ],
        {},
        workdir,
    )
    try:
        token = secrets.token_hex(16)
        tokens = workdir / "tokens.csv"
        tokens.write_text(f"{token},{ADMIN},{ADMIN},system:masters\n")
        key = _service_account_key(workdir)
        apiserver = start(
            "kube-apiserver",
            [
                *netns.launcher(),
                str(binaries()["KUBE_APISERVER"]),
                f"--etcd-servers={etcd_url}",
                # Not loopback: the API server must advertise a routable address.
                f"--advertise-address={address}",
                "--secure-port=6443",
                f"--cert-dir={workdir / 'certs'}",
                f"--token-auth-file={tokens}",
                # RBAC as in a real cluster: the agent's Role is what lets its resolver work.
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={key}",
                f"--service-account-signing-key-file={key}",
                "--service-cluster-ip-range=10.96.0.0/16",
            ],
            {},
            workdir,
        )
    except BaseException:
        etcd.stop()
        raise
    server = ApiServer(netns, etcd, apiserver, f"https://{address}:6443", workdir, token)

    def ready() -> bool:
        for process in (etcd, apiserver):
            process.ensure_alive()
        return server.kubectl("get", "--raw=/readyz").returncode == 0

    try:
        wait_until(ready, "kube-apiserver /readyz", timeout=90, interval=0.5)
    except BaseException:
        server.stop()
        raise
    return server
