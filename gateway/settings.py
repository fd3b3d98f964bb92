"""The gateway's one configuration file, as pydantic models.

Every model forbids unknown keys, so a typo is an error rather than a silently ignored setting, and
every field carries a description (the reference for the file format). `load_settings` reads the YAML,
applies `GATEWAY_`-prefixed environment overrides to the raw data, validates, and turns any failure into
a `ConfigError` whose message names the file and the dotted key path at fault, e.g.
``gateway.yaml: backends.jax.endpoints.0: expected host:port, got 'jax'``.

Backends are a discriminated union on `kind`: a new backend kind (TF Serving, TorchServe) is a new
settings class added to `BackendSettings`, plus a factory in `gateway.backends`.

These models are read once at start-up; nothing on the request path touches pydantic.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from gateway.errors import ConfigError

ENV_PREFIX = "GATEWAY_"
ENV_NESTING = "__"

Port = Annotated[int, Field(ge=0, le=65535)]

# host:port where host is a DNS name, an IPv4 address or a bracketed IPv6 address.
_ENDPOINT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})$")
# Backend names end up in metric labels and in environment variable names.
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# Each listener's port when the file (or an environment override) does not give one.
_DEFAULT_PORTS = {"rest": 8000, "grpc": 8001, "metrics": 8002}


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenerSettings(_Settings):
    """One listening socket."""

    host: str = Field(
        default="0.0.0.0", description="Address to bind; 0.0.0.0 for all IPv4 interfaces, :: for IPv6."
    )
    port: Port = Field(description="TCP port to bind, 0..65535; 0 picks a free ephemeral port.")


class ListenersSettings(_Settings):
    """The client-facing sockets and the limits shared by them."""

    rest: ListenerSettings = Field(
        default_factory=lambda: ListenerSettings(port=_DEFAULT_PORTS["rest"]),
        description="The Open Inference Protocol REST (HTTP/JSON + binary extension) listener.",
    )
    grpc: ListenerSettings = Field(
        default_factory=lambda: ListenerSettings(port=_DEFAULT_PORTS["grpc"]),
        description="The Open Inference Protocol gRPC listener.",
    )
    metrics: ListenerSettings = Field(
        default_factory=lambda: ListenerSettings(port=_DEFAULT_PORTS["metrics"]),
        description="The Prometheus scrape endpoint (/metrics).",
    )
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="Largest request body or gRPC request; larger get REST 413 / gRPC RESOURCE_EXHAUSTED.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=256,
        description="Processes serving REST and gRPC; more than one shares the ports with SO_REUSEPORT.",
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        description="On SIGTERM/SIGINT, how long in-flight requests may run before they are cancelled.",
    )
    max_in_flight: int = Field(
        default=0,
        ge=0,
        description=(
            "Inference requests one process serves at once (REST calls, gRPC calls and stream messages "
            "each count); past it, new ones get 429 / RESOURCE_EXHAUSTED, REST ones before their body is "
            "read. Size it so max_in_flight x request size fits in memory. Health and metadata calls are "
            "never refused. 0: no limit."
        ),
    )
    grpc_max_connection_age_s: float = Field(
        default=300.0,
        ge=0,
        description=(
            "gRPC clients are asked to reconnect after this long (and so re-resolve DNS and spread over "
            "new gateway replicas); calls in flight get 30 s more. A ModelStreamInfer stream open longer "
            "is then cut, so streaming clients reopen theirs. 0: connections are kept for ever."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _default_ports(cls, data: Any) -> Any:
        # A listener given in part (`rest: {host: ...}` in the file, or GATEWAY_LISTENERS__REST__HOST
        # alone) keeps its default port, as an omitted listener does.
        if not isinstance(data, dict):
            return data
        filled = dict(data)
        for key, port in _DEFAULT_PORTS.items():
            listener = filled.get(key)
            if isinstance(listener, dict) and "port" not in listener:
                filled[key] = {**listener, "port": port}
        return filled


class _BackendBase(_Settings):
    """Fields every backend kind has: where its replicas are, how they are watched, how they are labelled."""

    # The `framework` label of a backend of this kind whose config does not name one.
    default_framework: ClassVar[str] = ""

    endpoints: list[str] = Field(
        min_length=1,
        description='Replica addresses as "host:port"; requests are balanced across the healthy ones.',
    )
    timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Default deadline of one request toward this backend; a shorter client deadline wins.",
    )
    health_check_interval_s: float = Field(
        default=5.0, gt=0, description="Seconds between two readiness probes of each endpoint."
    )
    health_check_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="A readiness probe that takes longer than this marks the endpoint down.",
    )
    metadata_ttl_s: float = Field(
        default=30.0,
        ge=0,
        description="How long model metadata fetched for request validation is reused; 0 disables the cache.",
    )
    framework: str = Field(
        default="",
        pattern=r"^[a-z0-9_.-]*$",
        description=(
            'The framework label of this backend\'s metrics: jax, tensorflow, pytorch, triton, ...; "" = '
            "from its kind (tfserving: tensorflow, torchserve: pytorch, v2: oip, an OIP server whose "
            "framework the config does not say)."
        ),
    )

    @property
    def framework_label(self) -> str:
        """The `framework` metric label: the configured one, else the one of the backend's kind."""
        return self.framework or self.default_framework

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, endpoints: list[str]) -> list[str]:
        for index, endpoint in enumerate(endpoints):
            match = _ENDPOINT.match(endpoint)
            if match is None or not 0 < int(match["port"]) <= 65535:
                raise PydanticCustomError(
                    "endpoint",
                    "{index}: expected host:port (port 1..65535), got '{endpoint}'",
                    {"index": index, "endpoint": endpoint},
                )
        if len(set(endpoints)) != len(endpoints):
            raise PydanticCustomError("endpoint", "the same endpoint is listed twice")
        return endpoints


class _WireBackendBase(_BackendBase):
    """Fields of the kinds that speak gRPC or REST: which one, and the gRPC message limit."""

    protocol: Literal["grpc", "rest"] = Field(
        default="grpc", description="Wire protocol toward the backend; grpc is the faster one."
    )
    max_message_bytes: int = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="Largest gRPC message sent to or accepted from this backend.",
    )


class V2BackendSettings(_WireBackendBase):
    """A server speaking the Open Inference Protocol (KServe v2): Triton, KServe, MLServer, JAX runtime."""

    default_framework: ClassVar[str] = "oip"

    kind: Literal["v2"] = Field(description="Backend kind: the Open Inference Protocol.")
    binary_data: bool = Field(
        default=True,
        description="REST only: send tensors and ask for outputs in Triton's binary tensor extension; "
        "turn off for servers without it (e.g. MLServer), which then get and answer JSON tensors.",
    )


class TFServingBackendSettings(_WireBackendBase):
    """TensorFlow Serving (`tensorflow_model_server`, or the project's runtime of its API): gRPC
    PredictionService and ModelService, or its REST API (`/v1/models/...`)."""

    default_framework: ClassVar[str] = "tensorflow"

    kind: Literal["tfserving"] = Field(description="Backend kind: TensorFlow Serving.")


class TorchServeBackendSettings(_WireBackendBase):
    """TorchServe (0.12) serving models packaged with the project's handler (`runtimes/torchserve`): gRPC
    `InferenceAPIsService`, or its REST `/predictions` API. With token authorization on (TorchServe's
    default) requests carry the inference key, from `inference_key_file` or `inference_key`."""

    default_framework: ClassVar[str] = "pytorch"

    kind: Literal["torchserve"] = Field(description="Backend kind: TorchServe.")
    inference_key_file: str = Field(
        default="",
        description=(
            "File with TorchServe's inference key: its key_file.json, or a file holding the key alone (a "
            "mounted Secret). Re-read when it changes and when TorchServe refuses the key."
        ),
    )
    inference_key: SecretStr | None = Field(
        default=None, description="The inference key itself (prefer a file: a key in the config is a secret)."
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> TorchServeBackendSettings:
        if self.inference_key_file and self.inference_key is not None:
            raise PydanticCustomError("key_source", "give inference_key_file or inference_key, not both")
        return self


# New kinds join here; `kind` selects the model.
BackendSettings = Annotated[
    V2BackendSettings | TFServingBackendSettings | TorchServeBackendSettings, Field(discriminator="kind")
]


class V2RouteOptions(_Settings):
    """Route options of a `v2` backend: none yet (any key is refused)."""


class TFServingRouteOptions(_Settings):
    """Route options of a `tfserving` backend: which signature, version and outputs the route serves."""

    signature_name: str = Field(
        default="", description='The SavedModel signature; "" for the default ("serving_default").'
    )
    version_label: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_]*$",
        description="Send this version label (e.g. stable, canary) instead of the client's version.",
    )
    version: int = Field(
        default=0,
        ge=0,
        le=2**63 - 1,  # TF Serving's versions are int64
        description="Send this version number instead of the client's; 0: the client's.",
    )
    outputs: tuple[str, ...] = Field(
        default=(), description="Outputs asked for when the client names none; empty: all of them."
    )

    @model_validator(mode="after")
    def _one_version_choice(self) -> TFServingRouteOptions:
        if self.version and self.version_label:
            raise PydanticCustomError("route_options", "give version or version_label, not both")
        return self


class TorchServeRouteOptions(_Settings):
    """Route options of a `torchserve` backend."""

    version: str = Field(
        default="", description="Send this model version instead of the client's; \"\": the client's."
    )


RouteOptions = V2RouteOptions | TFServingRouteOptions | TorchServeRouteOptions
# The options of a route whose backend kind takes none.
NO_OPTIONS: RouteOptions = V2RouteOptions()
# The options model of each backend kind; a route's `options` are validated against its backend's.
ROUTE_OPTIONS: dict[str, type[RouteOptions]] = {
    "v2": V2RouteOptions,
    "tfserving": TFServingRouteOptions,
    "torchserve": TorchServeRouteOptions,
}


class RouteSettings(_Settings):
    """Sends one client-facing model (optionally one version of it) to a backend."""

    # YAML reads `version: 2` as an int; a version is a string on the wire.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)

    model: str = Field(min_length=1, description="The model name clients use.")
    version: str = Field(
        default="", description='Only requests for this version take the route; "" matches any version.'
    )
    backend: str = Field(description="Name of the backend (a key of `backends`) that serves the model.")
    backend_model: str = Field(
        default="", description='The model name on the backend, when it differs from `model`; "" keeps it.'
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Options for the backend, by its kind: tfserving takes signature_name, version_label, version "
            "and outputs; v2 takes none. Unknown keys are refused."
        ),
    )


class GatewaySettings(_Settings):
    """The whole configuration file."""

    listeners: ListenersSettings = Field(
        default_factory=ListenersSettings, description="Client-facing sockets and request limits."
    )
    backends: dict[str, BackendSettings] = Field(
        min_length=1, description="Model servers by name; the name is used in routes and metric labels."
    )
    routes: list[RouteSettings] = Field(
        default_factory=list, description="Which backend serves which client-facing model."
    )

    @field_validator("backends")
    @classmethod
    def _check_backend_names(cls, backends: dict[str, Any]) -> dict[str, Any]:
        for name in backends:
            if not _NAME.match(name):
                raise PydanticCustomError(
                    "backend_name",
                    "{name}: backend names use only letters, digits, '_', '.', '-'",
                    {"name": name},
                )
        return backends

    @model_validator(mode="after")
    def _check_routes(self) -> GatewaySettings:
        # Cross-field checks cannot attach a location to the error, so the message carries the key
        # path itself; `load_settings` prints it as is.
        seen: dict[tuple[str, str], int] = {}
        for index, route in enumerate(self.routes):
            if route.backend not in self.backends:
                raise PydanticCustomError(
                    "route_backend",
                    "routes.{index}.backend: unknown backend '{backend}' (configured: {known})",
                    {"index": index, "backend": route.backend, "known": ", ".join(sorted(self.backends))},
                )
            key = (route.model, route.version)
            if key in seen:
                raise PydanticCustomError(
                    "route_duplicate",
                    "routes.{index}: duplicate route for model '{model}' version '{version}'"
                    " (as routes.{first})",
                    {"index": index, "model": route.model, "version": route.version, "first": seen[key]},
                )
            seen[key] = index
            kind = self.backends[route.backend].kind
            try:
                ROUTE_OPTIONS[kind].model_validate(route.options)
            except ValidationError as exc:
                error = exc.errors()[0]
                where = ".".join(str(part) for part in error["loc"])
                what = "extra keys not permitted" if error["type"] == "extra_forbidden" else error["msg"]
                raise PydanticCustomError(
                    "route_options",
                    "routes.{index}.options{where}: {what} (backend '{backend}' is of kind {kind})",
                    {
                        "index": index,
                        "where": "." + where if where else "",
                        "what": what,
                        "backend": route.backend,
                        "kind": kind,
                    },
                ) from None
        return self

    def route_options(self, index: int) -> RouteOptions:
        """The typed options of route `index` (validated with the file)."""
        route = self.routes[index]
        return ROUTE_OPTIONS[self.backends[route.backend].kind].model_validate(route.options)


def load_settings(path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> GatewaySettings:
    """Read, override and validate a configuration file.

    Args:
        path: The YAML file.
        environ: Where `GATEWAY_` overrides come from; `os.environ` when None. `GATEWAY_A__B__C=v` sets
            key `a.b.c` (list items by index, `GATEWAY_BACKENDS__JAX__ENDPOINTS__0`); a value that starts
            with `[` or `{` is parsed as YAML flow syntax, any other stays a string for pydantic to convert.

    Returns:
        The validated settings.

    Raises:
        ConfigError: The file is unreadable, is not valid YAML, or fails validation. The message names the
            file and, one line per problem, the dotted key path.
    """
    name = os.fspath(path)
    try:
        text = Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: the top level must be a mapping of keys, got {type(data).__name__}")
    sources = apply_env_overrides(data, os.environ if environ is None else environ)
    try:
        return GatewaySettings.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(error, data, sources) for error in exc.errors()]
        raise ConfigError("\n".join(f"{name}: {line}" for line in lines)) from None


def apply_env_overrides(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, str]:
    """Write `GATEWAY_`-prefixed variables into the raw config data, in place.

    Only variables whose first segment names a top-level section (`LISTENERS`, `BACKENDS`, `ROUTES`)
    are applied. Keys match existing ones case-insensitively (environment names are upper case, YAML
    keys usually not); a missing key is created lower-cased. Returns the dotted key path set by each
    variable, so validation errors can name the variable.
    """
    sources: dict[str, str] = {}
    for var in sorted(environ):
        parts = var[len(ENV_PREFIX) :].split(ENV_NESTING) if var.startswith(ENV_PREFIX) else []
        # Only variables aimed at a top-level section are ours: GATEWAY_* variables used for
        # something else (by a launcher, say) must not turn into "extra keys" errors.
        if not parts or parts[0].lower() not in GatewaySettings.model_fields:
            continue
        if any(not p for p in parts):
            raise ConfigError(f"{var}: malformed override name (use GATEWAY_SECTION__KEY)")
        raw = environ[var]
        value: Any = _parse_flow(var, raw) if raw.lstrip().startswith(("[", "{")) else raw
        node: Any = data
        path: list[str] = []
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{var}: {'.'.join([*path, part])}: no such list item")
                key: Any = int(part)
            elif isinstance(node, dict):
                wanted = part.lower()
                key = next((k for k in node if isinstance(k, str) and k.lower() == wanted), wanted)
                if not last and node.get(key) is None:  # absent, or an empty `section:` in YAML
                    node[key] = {}
            else:
                raise ConfigError(f"{var}: {'.'.join(path)} is a value, not a section")
            path.append(str(key))
            if last:
                node[key] = value
            else:
                node = node[key]
        sources[".".join(path)] = var
    return sources


def _parse_flow(var: str, raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"{var}: invalid YAML value {raw!r}") from None


def _describe(error: Any, data: Any, sources: Mapping[str, str]) -> str:
    """One line for one pydantic error: the dotted path of the input key, then a short message."""
    kind = error["type"]
    if kind in ("route_backend", "route_duplicate", "route_options"):
        return str(error["msg"])  # the message carries its own path
    loc = _input_path(error["loc"], data)
    if kind == "extra_forbidden":
        message = "extra keys not permitted"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        loc.append("kind")
        tag = (error.get("ctx") or {}).get("tag")
        message = f"unknown backend kind {tag!r}" if tag is not None else "missing backend kind"
        message += f" (expected one of: {_backend_kinds()})"
    elif kind == "endpoint" and str(error["msg"])[:1].isdigit():
        index, _, message = str(error["msg"]).partition(": ")
        loc.append(index)
    else:
        message = str(error["msg"])
    dotted = ".".join(loc)
    for key, var in sources.items():
        if dotted == key or dotted.startswith(key + "."):
            message += f" (set by {var})"
            break
    return f"{dotted}: {message}" if dotted else message


def _input_path(loc: tuple[Any, ...], data: Any) -> list[str]:
    """The key path as written in the file: drops the discriminator tag pydantic inserts into `loc`."""
    path: list[str] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("kind") == part:
            continue  # the tagged-union member name, not a key of the input
        path.append(str(part))
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return path


def _backend_kinds() -> str:
    """The `kind` tags of `BackendSettings`, read off the union so new kinds show up by themselves."""
    union = get_args(BackendSettings)[0]
    members = get_args(union) or (union,)
    return ", ".join(repr(get_args(m.model_fields["kind"].annotation)[0]) for m in members)
