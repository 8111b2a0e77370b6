"""Grafana's provisioning files as data, and the few pieces of Grafana and Loki the tests stand
in for: variable interpolation, and a parser and evaluator for the LogQL subset our queries use.

Grafana and Loki are AGPL and never run here. What they would do is modelled only as far as the
tests need it, and the model fails loudly on anything outside that subset.
"""

import importlib.util
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import yaml

from nativestack.paths import REPO

GRAFANA_DIR = REPO / "grafana"
DATASOURCES_FILE = GRAFANA_DIR / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS_FILE = GRAFANA_DIR / "provisioning" / "dashboards" / "dashboards.yaml"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
GENERATOR = GRAFANA_DIR / "generate_dashboards.py"


# ------------------------------------------------------------------------ provisioning files


def provisioned_value(value: str) -> str:
    """A string value of a provisioning file as Grafana uses it: `$$` is a literal `$`. Any
    other `$` would be expanded from Grafana's environment, so it must not occur."""
    single = re.sub(r"\$\$", "", value)
    if "$" in single:
        raise ValueError(
            f"single `$` in a provisioning value (Grafana would expand it from its environment): {value!r}"
        )
    return value.replace("$$", "$")


def _unescape(node: Any) -> Any:
    if isinstance(node, str):
        return provisioned_value(node)
    if isinstance(node, list):
        return [_unescape(item) for item in node]
    if isinstance(node, dict):
        return {key: _unescape(item) for key, item in node.items()}
    return node


def datasources() -> dict[str, dict[str, Any]]:
    """The provisioned data sources by uid, with `$$` turned into `$` as Grafana reads them."""
    spec = _unescape(yaml.safe_load(DATASOURCES_FILE.read_text()))
    return {source["uid"]: source for source in spec["datasources"]}


def dashboard_providers() -> list[dict[str, Any]]:
    providers: list[dict[str, Any]] = yaml.safe_load(DASHBOARD_PROVIDERS_FILE.read_text())["providers"]
    return providers


def dashboards() -> dict[str, dict[str, Any]]:
    """Committed dashboard files by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}


def generator() -> ModuleType:
    """grafana/generate_dashboards.py, imported from its path (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("generate_dashboards", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(panel, target) for every query of every panel; a target without its own data source
    uses the panel's."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, {"datasource": panel.get("datasource"), **target}


def datasource_refs(dashboard: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, {type, uid}) for every data source a dashboard names."""
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("datasource"):
            yield f"variable {variable['name']}", variable["datasource"]
    for panel in panels(dashboard):
        if panel.get("datasource"):
            yield f"panel {panel['title']!r}", panel["datasource"]
        for target in panel.get("targets", []):
            if target.get("datasource"):
                yield f"panel {panel['title']!r} target {target.get('refId')}", target["datasource"]


# ---------------------------------------------------------------------------- interpolation

_VARIABLE = re.compile(r"\$\{([^}]+)\}|\$(\w+)|\[\[(\w+)\]\]")


def interpolate(text: str, values: dict[str, str]) -> str:
    """Grafana's `$name`, `${name}`, `${name:format}` and `[[name]]`, from `values`. A variable
    missing from `values` is an error, so no query is ever sent half-interpolated."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        name = name.split(":", 1)[0]
        if name not in values:
            raise KeyError(f"no value for Grafana variable {name!r} in {text!r}")
        return values[name]

    return _VARIABLE.sub(substitute, text)


# ------------------------------------------------------------------------------------ PromQL

_METRIC_IN_SELECTOR = re.compile(r"(?<![\w:.\"])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")


def metric_names(promql: str) -> set[str]:
    """Metric names written as `name{...}` in a PromQL expression (our queries always give a
    selector)."""
    return set(_METRIC_IN_SELECTOR.findall(promql))


def counter_uses_outside_rate(promql: str, counter: str) -> list[str]:
    """Occurrences of `counter{...}` not directly inside rate( or increase(."""
    bad = []
    for match in re.finditer(rf"(?<![\w:]){re.escape(counter)}\s*\{{", promql):
        before = promql[: match.start()].rstrip()
        if not re.search(r"\b(rate|increase)\($", before):
            bad.append(promql[max(0, match.start() - 30) : match.end() + 30])
    return bad


# ------------------------------------------------------------------------------ LogQL subset

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*"|`[^`]*`)
      | (?P<range>\[[^\]]+\])
      | (?P<op>\|=|\|~|!=|!~|=~|==|>=|<=|[=<>|,(){}])
      | (?P<number>\d+(?:\.\d+)?)
      | (?P<ident>[a-zA-Z_][a-zA-Z0-9_]*)
    )""",
    re.VERBOSE,
)
AGGREGATIONS = {"sum", "avg", "min", "max", "count"}
RANGE_FUNCTIONS = {"rate", "count_over_time", "bytes_over_time", "bytes_rate"}
LINE_FILTERS = {"|=", "!=", "|~", "!~"}
MATCH_OPS = {"=", "!=", "=~", "!~"}


@dataclass
class Matcher:
    name: str
    op: str
    value: str

    def matches(self, actual: str) -> bool:
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        found = re.fullmatch(self.value, actual) is not None
        return found if self.op == "=~" else not found


@dataclass
class Stage:
    kind: str  # "line" | "regexp" | "filter"
    op: str = ""
    value: str = ""
    # For "filter": disjunction of conjunctions of matchers (a or b and c -> [[a], [b, c]]).
    any_of: list[list[Matcher]] = field(default_factory=list)


@dataclass
class LogQuery:
    selector: list[Matcher]
    stages: list[Stage]
    aggregation: str | None = None
    grouping: list[str] = field(default_factory=list)
    range_function: str | None = None

    def stream_labels(self) -> set[str]:
        return {m.name for m in self.selector}


def _unquote(token: str) -> str:
    if token.startswith("`"):
        return token[1:-1]
    unquoted: str = json.loads(token)  # LogQL's "..." escapes are Go's, a superset of these
    return unquoted


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        position = 0
        text = text.rstrip()
        while position < len(text):
            match = _TOKEN.match(text, position)
            if not match or match.end() == position:
                raise ValueError(f"LogQL: cannot read {text[position:]!r}")
            kind = match.lastgroup
            assert kind is not None
            self.tokens.append((kind, match.group(kind)))
            position = match.end()
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        index = self.i + offset
        return self.tokens[index] if index < len(self.tokens) else ("end", "")

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        token_kind, token_value = self.peek()
        if (kind and token_kind != kind) or (value and token_value != value):
            raise ValueError(f"LogQL: expected {value or kind}, got {token_value!r} at token {self.i}")
        self.i += 1
        return token_value

    def query(self) -> LogQuery:
        kind, value = self.peek()
        if kind == "ident" and value in AGGREGATIONS:
            return self.aggregation()
        if kind == "ident" and value in RANGE_FUNCTIONS:
            return self.range_query()
        return self.log_query()

    def aggregation(self) -> LogQuery:
        name = self.take("ident")
        grouping = self.grouping() if self.peek()[1] in ("by", "without") else []
        self.take("op", "(")
        inner = self.range_query()
        self.take("op", ")")
        if not grouping and self.peek()[1] in ("by", "without"):
            grouping = self.grouping()
        inner.aggregation, inner.grouping = name, grouping
        return inner

    def grouping(self) -> list[str]:
        self.take("ident")
        self.take("op", "(")
        names = [self.take("ident")]
        while self.peek()[1] == ",":
            self.take("op", ",")
            names.append(self.take("ident"))
        self.take("op", ")")
        return names

    def range_query(self) -> LogQuery:
        function = self.take("ident")
        if function not in RANGE_FUNCTIONS:
            raise ValueError(f"LogQL: unsupported range function {function!r}")
        self.take("op", "(")
        inner = self.log_query()
        window = self.take("range")
        if not re.fullmatch(r"\[\d+(ms|s|m|h|d)\]", window):
            raise ValueError(f"LogQL: bad range {window!r}")
        self.take("op", ")")
        inner.range_function = function
        return inner

    def log_query(self) -> LogQuery:
        selector = self.selector()
        stages = []
        while True:
            kind, value = self.peek()
            if kind == "op" and value in LINE_FILTERS:
                self.take()
                stages.append(Stage("line", op=value, value=_unquote(self.take("string"))))
            elif kind == "op" and value == "|":
                self.take()
                stages.append(self.pipe_stage())
            else:
                return LogQuery(selector, stages)

    def selector(self) -> list[Matcher]:
        self.take("op", "{")
        matchers = [self.matcher()]
        while self.peek()[1] == ",":
            self.take("op", ",")
            matchers.append(self.matcher())
        self.take("op", "}")
        if all(m.matches("") for m in matchers):
            raise ValueError("LogQL: a stream selector needs a matcher that does not match the empty value")
        return matchers

    def matcher(self) -> Matcher:
        name = self.take("ident")
        op = self.take("op")
        if op not in MATCH_OPS:
            raise ValueError(f"LogQL: bad matcher operator {op!r}")
        value = _unquote(self.take("string"))
        if op in ("=~", "!~"):
            re.compile(value)
        return Matcher(name, op, value)

    def pipe_stage(self) -> Stage:
        kind, value = self.peek()
        if kind == "ident" and value == "regexp":
            self.take()
            pattern = _unquote(self.take("string"))
            if not re.compile(pattern).groupindex:
                raise ValueError(f"LogQL: regexp {pattern!r} names no capture group")
            return Stage("regexp", value=pattern)
        return Stage("filter", any_of=self.label_filter())

    def label_filter(self) -> list[list[Matcher]]:
        groups = [[self.comparison()]]
        while self.peek()[1] in ("and", "or", ","):
            joiner = self.take()
            if joiner == "or":
                groups.append([self.comparison()])
            else:
                groups[-1].append(self.comparison())
        return groups

    def comparison(self) -> Matcher:
        name = self.take("ident")
        op = self.take("op")
        if op == "==":
            op = "="
        if op not in MATCH_OPS:
            raise ValueError(f"LogQL: unsupported label filter operator {op!r}")
        return Matcher(name, op, _unquote(self.take("string")))


def parse_logql(text: str) -> LogQuery:
    """Parse a LogQL query of the subset our dashboards and links use; ValueError otherwise."""
    parser = _Parser(text)
    query = parser.query()
    if parser.peek()[0] != "end":
        raise ValueError(f"LogQL: unexpected {parser.peek()[1]!r} after the query")
    return query


@dataclass
class LogEntry:
    """One log line as Loki stores it: stream labels, structured metadata, the line."""

    labels: dict[str, str]
    metadata: dict[str, str]
    line: str


def evaluate(query: LogQuery, entries: list[LogEntry]) -> list[tuple[LogEntry, dict[str, str]]]:
    """The entries a log query keeps, each with the labels its pipeline ends with. Follows Loki:
    matchers compare stream labels (a missing label is ""), `=~` is anchored, a regexp stage adds
    its named groups when the line matches (a name already taken gets the `_extracted` suffix)."""
    kept = []
    for entry in entries:
        if not all(m.matches(entry.labels.get(m.name, "")) for m in query.selector):
            continue
        labels = {**entry.labels, **entry.metadata}
        keep = True
        for stage in query.stages:
            keep = _apply(stage, entry.line, labels)
            if not keep:
                break
        if keep:
            kept.append((entry, labels))
    return kept


def _apply(stage: Stage, line: str, labels: dict[str, str]) -> bool:
    if stage.kind == "line":
        checks: dict[str, Callable[[], bool]] = {
            "|=": lambda: stage.value in line,
            "!=": lambda: stage.value not in line,
            "|~": lambda: re.search(stage.value, line) is not None,
            "!~": lambda: re.search(stage.value, line) is None,
        }
        return checks[stage.op]()
    if stage.kind == "regexp":
        match = re.search(stage.value, line)
        if match:
            for name, value in match.groupdict().items():
                labels[f"{name}_extracted" if name in labels else name] = value or ""
        return True
    return any(all(m.matches(labels.get(m.name, "")) for m in group) for group in stage.any_of)
