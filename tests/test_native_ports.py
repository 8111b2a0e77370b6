"""What the native stack guarantees the other tests: no loopback port handed out twice."""

from nativestack.processes import free_port


def test_free_port_never_hands_out_a_port_twice() -> None:
    # 2000 picks from ~12,800 ports: without the bookkeeping a repeat is all but certain.
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
