"""The JSON report's schema (versioned) and a small validator for it.

``SCHEMA`` is a JSON Schema (draft 2020-12 keywords only: type, properties, required,
additionalProperties, items, enum, const, minimum); ``ipcwire bench --schema`` prints it.
The schema is stable within a ``schema_version``: fields are only added (consumers must ignore
unknown fields, so objects allow additional properties); renaming or removing a field, or
changing its meaning, bumps the version.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["SCHEMA", "validate"]

_NUM: Final = {"type": "number"}
_NUM_OR_NULL: Final = {"type": ["number", "null"]}
_STR_OR_NULL: Final = {"type": ["string", "null"]}
_PAIR: Final = {"type": "array", "items": _NUM}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": sorted(required),
    }


_COSTS: Final = {
    "cpu_us_per_msg": _NUM,
    "cpu_us_per_msg_a": _NUM,
    "cpu_us_per_msg_b": _NUM,
    "busy_a": _NUM,
    "busy_b": _NUM,
}

# Round trips each made after gap_us of idle time (side B sleeps in the kernel, untimed),
# for rows whose wait policy is a choice: back to back, a hybrid wait never leaves its spin
# phase. Per repetition ("idle" of a repetition) and summarised ("idle" of the summary).
_IDLE_REPETITION: Final = _obj(
    {
        "gap_us": _NUM,
        "round_trips": {"type": "integer", "minimum": 1},
        "latency_us": _obj({"p50": _NUM, "p99": _NUM, "min": _NUM, "max": _NUM}),
    },
    {"seconds": _NUM_OR_NULL},
)

_IDLE_SUMMARY: Final = _obj(
    {
        "gap_us": _NUM,
        "p50_us": _NUM,
        "p50_spread_us": _PAIR,
        "p99_us": _NUM,
        "round_trips": {"type": "integer", "minimum": 1},
        "round_trips_min": {"type": "integer", "minimum": 1},
        "p99_firm": {"type": "boolean"},
    },
    {"p90_us": _NUM},
)

_ROUND_TRIP_SUMMARY: Final = _obj(
    {
        "p50_us": _NUM,
        "p90_us": _NUM,
        "p99_us": _NUM,
        "p99_9_us": _NUM,
        "mean_us": _NUM,
        "min_us": _NUM,
        "p50_spread_us": _PAIR,
        "round_trips": {"type": "integer", "minimum": 1},
        **_COSTS,
    },
    {
        "round_trips_min": {"type": "integer", "minimum": 1},  # the fewest of any repetition
        # whether every repetition had the samples the percentile needs (100 / 1000)
        "p99_firm": {"type": "boolean"},
        "p99_9_firm": {"type": "boolean"},
        "idle": _IDLE_SUMMARY,  # round trips after idle time, when measured
    },
)

_THROUGHPUT_SUMMARY: Final = _obj(
    {
        "msgs_per_s": _NUM,
        "bytes_per_s": _NUM,
        "msgs_per_s_spread": _PAIR,
        "messages": {"type": "integer", "minimum": 1},
        **_COSTS,
    }
)

_REPETITION: Final = _obj(
    {
        "cpu_us_per_msg": _obj({"a": _NUM, "b": _NUM, "total": _NUM}),
        "busy": _obj({"a": _NUM, "b": _NUM}),
    },
    {
        "round_trips": {"type": "integer"},
        "latency_us": _obj({"p50": _NUM, "p99": _NUM, "min": _NUM, "max": _NUM}),
        "messages": {"type": "integer"},
        "seconds": _NUM,
        "msgs_per_s": _NUM,
        "bytes_per_s": _NUM,
        "elapsed_s": _NUM_OR_NULL,
        "setup_s": _NUM_OR_NULL,
        "receiver_s": _NUM,
        "sender_s": _NUM,
        "phases": {"type": "object"},
        "idle": _IDLE_REPETITION,
    },
)

_RESULT: Final = _obj(
    {
        "contender": {"type": "string"},
        "kind": {"enum": ["round_trip", "throughput"]},
        "size": {"type": "integer", "minimum": 1},
        "batch": {"type": "integer", "minimum": 0},
        "status": {"enum": ["ok", "failed"]},
        "error": _STR_OR_NULL,
        "repetitions": {"type": "array", "items": _REPETITION},
        "summary": {"type": ["object", "null"]},
        "vs_baseline": _NUM_OR_NULL,
        "vs_fastest": _NUM_OR_NULL,
    },
    {
        "vs_baseline_spread": {"type": "array", "items": _NUM},
        # the ratio to a baseline that did other work: shown, never read as vs_baseline
        "vs_baseline_unequal": _obj({"ratio": _NUM, "spread": _PAIR, "why": {"type": "string"}}),
    },
)

_CONTENDER: Final = _obj(
    {
        "id": {"type": "string"},
        "title": {"type": "string"},
        "group": {"enum": ["ipcwire", "baseline", "peer"]},
        "mechanism": {"type": "string"},
        "api": {"enum": ["blocking", "asyncio"]},
        "wait": {"type": "string"},
        "framing": {"type": "string"},
        "overhead_bytes": {"type": ["integer", "null"]},
        "batched": {"type": "boolean"},
        "baseline": _STR_OR_NULL,
        "patterns": {"type": "object"},
        "note": {"type": "string"},
        "available": {"const": True},
    },
    {"unequal": {"type": "object"}},  # kind -> why rows compared with it do other work
)

_MACHINE: Final = _obj(
    {
        "cpu_model": _STR_OR_NULL,
        "logical_cpus": {"type": ["integer", "null"]},
        "usable_cpus": {"type": ["array", "null"], "items": {"type": "integer"}},
        "system": {"type": "string"},
        "kernel": {"type": "string"},
        "machine": {"type": "string"},
        "python": {"type": "string"},
        "virtualisation": {"type": "object"},
        "cpuidle": {"type": "object"},
        "pinning": _obj({"mode": {"enum": ["separate", "same", "none"]}}),
        "pipe_buffer_bytes": {"type": ["integer", "null"]},
        "pipe_max_bytes": {"type": ["integer", "null"]},
        "socket_buffer_bytes": {"type": "object"},
        "mqueue": {"type": "object"},
        "dev_shm_bytes": {"type": ["integer", "null"]},
        "load_average": {"type": ["array", "null"], "items": _NUM},
    },
    {"smt_active": _STR_OR_NULL, "load_average_after": {"type": ["array", "null"]}},
)

_CONFIG: Final = _obj(
    {
        "preset": {"type": "string"},
        "round_trip_sizes": {"type": "array", "items": {"type": "integer"}},
        "throughput_sizes": {"type": "array", "items": {"type": "integer"}},
        "repeat": {"type": "integer", "minimum": 1},
        "duration_s": _NUM,
        "warmup_s": _NUM,
        "mechanisms": {"type": ["array", "null"], "items": {"type": "string"}},
        "only": {"type": ["array", "null"], "items": {"type": "string"}},
        "apis": {"type": "array", "items": {"type": "string"}},
        "peers": {"type": "boolean"},
        "pin": {"enum": ["separate", "same", "none"]},
        "seed": {"type": "integer"},
    },
    {
        "budget_s": _NUM_OR_NULL,
        "floor": {"type": "boolean"},
        "batched_sizes": {"type": ["array", "null"], "items": {"type": "integer"}},
        "idle_round_trips": {"type": "integer", "minimum": 0},
        "idle_gap_s": _NUM,
    },
)

_CHECK: Final = _obj(
    {
        "rule": {"type": "string"},
        "metric": {"enum": ["round_trip", "bandwidth"]},
        "threshold": _NUM,
        "measured": _NUM_OR_NULL,
        "by": _STR_OR_NULL,
        "size": {"type": ["integer", "null"]},
        "held": {"type": ["boolean", "null"]},
    },
    {"floor": _NUM_OR_NULL, "floor_kind": _STR_OR_NULL},
)

_TARGET: Final = _obj(
    {
        "target": {"type": "string"},
        "ratio": _NUM_OR_NULL,
        "limit": _NUM,
        "comparison": {"enum": ["at most", "at least"]},
        "held": {"type": ["boolean", "null"]},
    },
    {
        "ratio_spread": {"type": ["array", "null"], "items": _NUM},
        "clear": {"type": ["boolean", "null"]},
        "comparable": {"type": "boolean"},  # False: shown, neither held nor missed
        "why": {"type": "string"},
        "note": {"type": "string"},  # e.g. a C floor that was not below the measured value
        "repetitions": {"type": "integer"},  # how many paired repetitions the ratio rests on
        # what was compared: "back to back", or "after idle" (round trips after idle time)
        "basis": {"enum": ["back to back", "after idle"]},
    },
)

_FLOOR: Final = _obj(
    {"available": {"type": "boolean"}},
    {
        "reason": {"type": "string"},
        "round_trip": {
            "type": "array",
            "items": _obj(
                {
                    "kind": {"type": "string"},
                    "size": {"type": "integer"},
                    "p50_us": _NUM,
                    "p99_us": _NUM,
                    "min_us": _NUM,
                    "round_trips": {"type": "integer"},
                },
                {"gap_us": _NUM},  # futex/idle: the idle time before each round trip
            ),
        },
        "memcpy": {
            "type": "array",
            "items": _obj({"size": {"type": "integer"}, "bytes_per_s": _NUM}),
        },
        "cpus": {"type": ["array", "null"], "items": {"type": "integer"}},
    },
)

SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "ipcwire bench report, schema version 1",
    **_obj(
        {
            "schema": {"const": "ipcwire-bench"},
            "schema_version": {"const": 1},
            "ipcwire_version": {"type": "string"},
            "command_line": {"type": "array", "items": {"type": "string"}},
            "started_at": {"type": "string"},
            "elapsed_s": _NUM,
            "config": _CONFIG,
            "machine": _MACHINE,
            "contenders": {"type": "array", "items": _CONTENDER},
            "unavailable": {"type": "array", "items": {"type": "object"}},
            "results": {"type": "array", "items": _RESULT},
            "notes": {"type": "array", "items": {"type": "string"}},
            "explanations": {"type": "array", "items": {"type": "string"}},
            "verdict": {"type": "array", "items": {"type": "string"}},
            "rules_of_thumb": {"type": "array", "items": _CHECK},
            "targets": {"type": "array", "items": _TARGET},
        },
        {
            "floor": _FLOOR,
            # which code paths ran: the C extension, or the pure-Python fallbacks
            "implementation": _obj(
                {
                    "extension": {"type": "boolean"},
                    "shm_ring": {"enum": ["c", "python"]},
                    "stream_sender": {"enum": ["c", "python"]},
                },
                {"extension_error": _STR_OR_NULL, "environment": {"type": "object"}},
            ),
        },
    ),
}

# The summary's shape depends on the kind; checked by validate() after the schema.
SUMMARIES: Final = {"round_trip": _ROUND_TRIP_SUMMARY, "throughput": _THROUGHPUT_SUMMARY}

_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def _type_ok(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[name])


def _check(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: expected {schema['const']!r}, got {value!r}")
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
        return
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_type_ok(value, n) for n in names):
            errors.append(f"{path}: expected {' or '.join(names)}, got {type(value).__name__}")
            return
    if "minimum" in schema and isinstance(value, int | float) and value < schema["minimum"]:
        errors.append(f"{path}: {value} is below the minimum {schema['minimum']}")
    if isinstance(value, dict):
        for key in schema.get("required", ()):
            if key not in value:
                errors.append(f"{path}: missing {key!r}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _check(value[key], sub, f"{path}.{key}", errors)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _check(item, schema["items"], f"{path}[{i}]", errors)


def validate(document: Any) -> list[str]:
    """Every way ``document`` departs from :data:`SCHEMA` (an empty list: it conforms)."""
    errors: list[str] = []
    _check(document, SCHEMA, "$", errors)
    if errors or not isinstance(document, dict):
        return errors
    for i, result in enumerate(document["results"]):
        if result["status"] == "ok":
            if result["summary"] is None:
                errors.append(f"$.results[{i}]: status ok without a summary")
            else:
                _check(result["summary"], SUMMARIES[result["kind"]], f"$.results[{i}]", errors)
        ids = {c["id"] for c in document["contenders"]}
        if result["contender"] not in ids:
            errors.append(f"$.results[{i}]: unknown contender {result['contender']!r}")
    return errors
