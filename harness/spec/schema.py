"""The experiment file's JSON Schema, generated from the pydantic models (`harness.spec.model`), so
editors and CI linters (check-jsonschema) can check a file without the harness.

The schema states the structure, types, enums and per-field bounds. What needs more than one field
or the host (a pinned CPU the machine lacks, memory beyond the host's RAM, files that must exist,
window options without `agent_latency`, the cell count) is checked by the loader only: a file the
schema accepts can still be refused by `python -m harness validate`, never the other way round.
"""

from __future__ import annotations

from typing import Any

from harness.spec.model import Experiment

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def experiment_schema() -> dict[str, Any]:
    schema = Experiment.model_json_schema(mode="validation")
    return {"$schema": DIALECT, "title": "agent-latency harness experiment",
            **{k: v for k, v in schema.items() if k != "title"}}
