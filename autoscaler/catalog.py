"""Load the profiles in `policies/` (and the user's own directories) into one catalog.

Each YAML file holds one or more documents (`---`), each with a `kind`. Shipped
profiles load first; a user's directory adds profiles or overrides shipped ones
of the same kind and name. Two files of the same directory tree defining the
same name is an error: which one was meant is ambiguous.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from autoscaler.errors import ConfigError
from autoscaler.profiles import (
    PROFILE_KINDS,
    GpuProfile,
    ModelProfile,
    Profile,
    ScalingPolicy,
    ServerProfile,
)

_PROFILE = TypeAdapter(Profile)
T = TypeVar("T", bound=BaseModel)


def builtin_policies_dir() -> Path:
    """The shipped profiles: `policies/` in a checkout, package data when installed."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_builtin_policies", here.parent / "policies"):
        if candidate.is_dir():
            return candidate
    raise RuntimeError(f"shipped policies not found beside {here}")  # a broken install


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last,
    so a second `nemo-gpt-5b:` under `models:` silently replaced the first's limits."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue  # '<<' merges may repeat keys on purpose; complex keys: PyYAML's job
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found the key {key!r} twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml_documents(path: Path) -> list[Any]:
    """Parse a YAML file into its documents; bad YAML names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=path) from exc
    except UnicodeDecodeError:  # a ValueError, not an OSError: binary data, or another encoding
        raise ConfigError("not a text file (YAML is UTF-8)", file=path) from None
    return parse_yaml_documents(text, path)


def parse_yaml_documents(text: str, file: Path | str, field: str | None = None) -> list[Any]:
    """The documents of YAML text (`file`, and `field` where it is embedded in another
    file); bad YAML, or YAML that nests or expands too far, names the file and line."""
    try:
        docs = [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML{where}: {problem}", file=file, field=field) from exc
    except RecursionError:  # 5,000 nested '[' was 'internal error: RecursionError'
        raise ConfigError("not valid YAML: nested too deeply", file=file, field=field) from None
    for doc in docs:
        _check_expanded_size(doc, file, field)
    return docs


# The most values a YAML document may expand to, aliases counted each time they are
# used. The largest file shipped (a Kubernetes manifest) holds 166; a day of per-second
# rate points written inline, 2 × 86,400. A few hundred bytes of aliases of aliases
# ("a: &a [x, x, …]", "b: &b [*a, *a, …]", … nine levels) expand to 10⁹, which every
# later step walks: `validate` of such a file ran for minutes.
MAX_YAML_VALUES = 1_000_000


def _check_expanded_size(doc: Any, file: Path | str, field: str | None) -> None:
    """Refuse a document that expands to more than MAX_YAML_VALUES values (a walk that
    stops there: at most ~0.3 s, whatever the aliases would expand to)."""
    seen, todo = 0, [doc]
    while todo:
        value = todo.pop()
        seen += 1
        if seen > MAX_YAML_VALUES:
            raise ConfigError(
                f"expands to more than {MAX_YAML_VALUES:,} values (aliases that repeat "
                "aliases?); write the values out, or split the file",
                file=file,
                field=field,
            )
        if isinstance(value, dict):
            todo.extend(value.keys())
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)


_BOUNDS = frozenset(("less_than", "less_than_equal", "greater_than", "greater_than_equal"))


_NO_DOC = object()  # validation_error without the document: pydantic's path as it is


def validation_error(
    exc: ValidationError, file: Path | str, prefix: str = "", doc: Any = _NO_DOC
) -> ConfigError:
    """Turn pydantic's first error into one line naming file, field, value and rule;
    `doc`, the document validated, names the field as the file wrote it (below)."""
    err = exc.errors(include_url=False)[0]
    # with the document, a tagged union's tag ("model.optimum..." for a profile of kind
    # model) is left out of the path (_as_written)
    loc = _as_written(err["loc"], doc) if doc is not _NO_DOC else [str(p) for p in err["loc"]]
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "model_type":  # "... or instance of TritonSection": our class name
        msg = "must be a mapping of its fields (key: value lines), not a single value or list"
    # a dict key's error ends in "[key]": "counters.nope.[key]" named the key twice
    if err["loc"] and err["loc"][-1] == "[key]":
        loc = loc[:-1] if loc and loc[-1] == "[key]" else loc
        msg = f"unknown key: {msg[:1].lower()}{msg[1:]}"
    field_path = ".".join(([prefix] if prefix else []) + loc) or None
    value = err.get("input")
    if isinstance(value, float) and math.isnan(value) and err["type"] in _BOUNDS:
        # NaN fails every comparison, so pydantic names whichever bound it tried first:
        # "should be less than or equal to 60" for a NaN said nothing of what was wrong
        msg = f"must be a number, not NaN ({msg[:1].lower()}{msg[1:]})"
    more = len(exc.errors()) - 1
    if more:
        msg += f" (and {more} more problem{'s' if more > 1 else ''} in this file)"
    if err["type"] == "missing":
        return ConfigError("required field is missing", file=file, field=field_path)
    if err["type"] == "extra_forbidden":
        return ConfigError("unknown field", file=file, field=field_path)
    if isinstance(value, dict):  # a whole mapping is not a helpful "value"
        return ConfigError(msg, file=file, field=field_path)
    return ConfigError(msg, file=file, field=field_path, value=value)


def _as_written(loc: tuple[int | str, ...], doc: Any) -> list[str]:
    """The path of `loc` through `doc`, leaving out what the file did not write: the tag
    pydantic puts in the path of a tagged union's member ("users.week.week.peak_hour"
    for `users: {week: {peak_hour: 24}}`, "users.number" for `users: -4`,
    "workload.closed.rate" for a workload of kind closed). A segment that names a key
    of the document is still a tag where the next one is a key beside it, not in it
    (`users: {points: [...], diurnal: ...}`: "users.points.diurnal" is users.diurnal).
    The last segment stays where it is missing from a mapping: a missing or unknown
    field."""
    out: list[str] = []
    node = doc
    for i, part in enumerate(loc):
        nxt = loc[i + 1] if i + 1 < len(loc) else None
        if _has(node, part) and not (
            nxt is not None and _has(node, nxt) and not _has(_at(node, part), nxt)
        ):
            node = _at(node, part)
        elif i < len(loc) - 1 or part == "[key]" or not isinstance(node, dict):
            continue  # a tag, or pydantic's marker of a dict key
        out.append(str(part))
    return out


def _has(node: Any, part: int | str) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _at(node: Any, part: int | str) -> Any:
    return node[part] if _has(node, part) else None


def parse_profile(
    doc: Any, path: Path | str, index: int = 0, other_kinds: tuple[str, ...] = ()
) -> Profile:
    """One profile document; `other_kinds`: the kinds the caller reads itself, named
    among the allowed ones (`validate` reads autoscaler-config files too)."""
    where = f"{path}#{index + 1}" if index else str(path)
    if not isinstance(doc, dict):
        raise ConfigError("a profile must be a mapping with a 'kind' field", file=where)
    kind = doc.get("kind")
    if kind not in PROFILE_KINDS:
        raise ConfigError(
            "unknown or missing kind",
            file=where,
            field="kind",
            value=kind,
            allowed=PROFILE_KINDS + other_kinds,
        )
    try:
        return _PROFILE.validate_python(doc)
    except ValidationError as exc:
        raise validation_error(exc, where, doc=doc) from exc


@dataclass
class Catalog:
    """All known profiles by kind and name."""

    models: dict[str, ModelProfile] = field(default_factory=dict)
    gpus: dict[str, GpuProfile] = field(default_factory=dict)
    servers: dict[str, ServerProfile] = field(default_factory=dict)
    policies: dict[str, ScalingPolicy] = field(default_factory=dict)
    origin: dict[tuple[str, str], Path] = field(default_factory=dict)

    def _table(self, kind: str) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = {
            "model": self.models,
            "gpu": self.gpus,
            "server": self.servers,
            "scaling-policy": self.policies,
        }
        return tables[kind]

    def add(self, profile: Profile, path: Path) -> None:
        self._table(profile.kind)[profile.name] = profile
        self.origin[(profile.kind, profile.name)] = path

    def model(self, name: str) -> ModelProfile:
        return _lookup(self.models, name, "model")

    def gpu(self, name: str) -> GpuProfile:
        return _lookup(self.gpus, name, "gpu")

    def server(self, name: str) -> ServerProfile:
        return _lookup(self.servers, name, "server")

    def policy(self, name: str = "default") -> ScalingPolicy:
        return _lookup(self.policies, name, "scaling policy")

    def check_references(self) -> None:
        for s in self.servers.values():
            if s.gpu not in self.gpus:
                raise ConfigError(
                    "server refers to an unknown gpu profile",
                    file=self.origin.get(("server", s.name)),
                    field="gpu",
                    value=s.gpu,
                    allowed=self.gpus,
                )


def _lookup(table: dict[str, T], name: str, what: str) -> T:
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"unknown {what} '{name}'", allowed=table or ["(none)"]) from None


def yaml_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        # /dev/null, a FIFO, a socket: "does not exist" said of a path that does
        why = "not a regular file or directory" if root.exists() else "no such file or directory"
        raise ConfigError(f"cannot read profiles: {why}", file=root)
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_layer(root: Path, *, skip_kinds: tuple[str, ...] = ()) -> list[tuple[Profile, Path]]:
    """Every profile under one directory; a name defined twice in it is an error."""
    seen: dict[tuple[str, str], Path] = {}
    out: list[tuple[Profile, Path]] = []
    for path in yaml_files(root):
        for i, doc in enumerate(read_yaml_documents(path)):
            if isinstance(doc, dict) and doc.get("kind") in skip_kinds:
                continue
            profile = parse_profile(doc, path, i, skip_kinds)
            key = (profile.kind, profile.name)
            if key in seen:
                raise ConfigError(
                    f"duplicate {profile.kind} name '{profile.name}' (also defined in "
                    f"{seen[key]}); names must be unique within one policies directory",
                    file=path,
                    field="name",
                )
            seen[key] = path
            out.append((profile, path))
    return out


def load_catalog(extra_dirs: Sequence[Path] = (), *, builtin: bool = True) -> Catalog:
    """Shipped profiles, then each of `extra_dirs` in order, later ones overriding by name."""
    roots: Iterable[Path] = ([builtin_policies_dir()] if builtin else []) + list(extra_dirs)
    cat = Catalog()
    for root in roots:
        for profile, path in load_layer(Path(root)):
            cat.add(profile, path)
    cat.check_references()
    return cat
