"""Exports of the catalog, lineage and versions: JSON, Markdown, OpenLineage run events."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict

from sqlalchemy import Engine

from metadata.catalog import catalog_tables, list_columns, list_tables
from metadata.lineage import lineage
from metadata.versions import list_versions
from utils.render import to_json
from utils.urls import mask_url
from utils.vocabulary import SOURCE_COLUMNS

PRODUCER = "https://example.invalid/retail-data-platform"  # identifies this tool in OpenLineage events
OPENLINEAGE_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
_RUN_NAMESPACE = uuid.UUID("6f1c3f7e-3b8a-4c55-9d7e-5a3e2b1c0d42")


def snapshot(engine: Engine, complete: bool = False) -> dict:
    """Catalog, lineage of every load, and versions; `complete` adds column statistics."""
    tables = [asdict(t) for t in list_tables(engine)]
    if complete:
        for t in tables:
            t["columns"] = list_columns(engine, t["name"]) if t["rows"] is not None else []
    else:
        for t in tables:
            model = catalog_tables()[t["name"]]
            t["columns"] = [
                {
                    "column": c.name,
                    "type": str(c.type.compile(engine.dialect)),
                    "nullable": bool(c.nullable),
                    "description": c.comment or "",
                }
                for c in model.columns
            ]
    return {"warehouse": _warehouse(engine), "tables": tables, "lineage": lineage(engine), "versions": list_versions(engine, limit=10_000)}


def _warehouse(engine: Engine) -> str:
    return mask_url(engine.url.render_as_string(hide_password=False))


def to_markdown(data: dict) -> str:
    """A readable Markdown document of a snapshot."""
    out = [f"# Warehouse metadata: {data['warehouse']}", "", "## Tables", "", "| table | kind | rows | description |", "|---|---|---|---|"]
    out += [f"| {t['name']} | {t['kind']} | {t['rows'] if t['rows'] is not None else '-'} | {t['description']} |" for t in data["tables"]]
    for t in data["tables"]:
        out += ["", f"### {t['name']}", "", "| column | type | nullable | description |", "|---|---|---|---|"]
        out += [f"| {c['column']} | {c['type']} | {'yes' if c['nullable'] else 'no'} | {c['description']} |" for c in t["columns"]]
    out += ["", "## Versions", "", "| version | kind | status | facts | source |", "|---|---|---|---|---|"]
    out += [f"| {v['run_id']} | {v['kind']} | {v['status']} | {v['rows_loaded']} | {v['source']} |" for v in data["versions"]]
    return "\n".join(out) + "\n"


def run_uuid(run_id: int, warehouse: str) -> str:
    """A stable UUID for a run of one warehouse (OpenLineage wants UUID run ids)."""
    return str(uuid.uuid5(_RUN_NAMESPACE, f"{warehouse}#{run_id}"))


def openlineage_events(engine: Engine) -> list[dict]:
    """One START and one COMPLETE/FAIL event per load, with schema, output statistics and quality facets."""
    data = snapshot(engine)
    warehouse = data["warehouse"]
    schemas = {
        t["name"]: {"fields": [{"name": c["column"], "type": c["type"], "description": c["description"]} for c in t["columns"]]}
        for t in data["tables"]
    }
    versions = {v["run_id"]: v for v in data["versions"]}
    events: list[dict] = []
    for run in data["lineage"]:
        meta = versions.get(run["run_id"], {})
        started = str(meta.get("started_at") or "")
        base = {
            "producer": PRODUCER,
            "schemaURL": OPENLINEAGE_SCHEMA,
            "run": {
                "runId": run_uuid(run["run_id"], warehouse),
                "facets": {"rdp_run": {"_producer": PRODUCER, "_schemaURL": PRODUCER + "/facets/rdp_run", "run_id": run["run_id"]}},
            },
            "job": {"namespace": "retail-data-platform", "name": str(meta.get("job_name") or "etl")},
        }
        source = {
            "namespace": "file",
            "name": run["source"]["location"],
            "facets": {"schema": _facet({"fields": [{"name": c, "type": "string"} for c in SOURCE_COLUMNS]})},
        }
        source["inputFacets"] = {"dataQualityMetrics": _facet({"rowCount": run["source"]["rows"], "columnMetrics": {}})}
        outputs = [
            {
                "namespace": warehouse,
                "name": table,
                "facets": {"schema": _facet(schemas.get(table, {"fields": []}))},
                "outputFacets": {"outputStatistics": _facet({"rowCount": sum(changes.values())})},
            }
            for table, changes in run["targets"].items()
        ]
        events.append(base | {"eventType": "START", "eventTime": _iso(started), "inputs": [source], "outputs": []})
        final = "COMPLETE" if run["status"] in ("success", "rolled_back") else "FAIL"
        events.append(
            base | {"eventType": final, "eventTime": _iso(str(meta.get("finished_at") or started)), "inputs": [source], "outputs": outputs}
        )
    return events


def _facet(body: dict) -> dict:
    return {"_producer": PRODUCER, "_schemaURL": OPENLINEAGE_SCHEMA.replace("#/$defs/RunEvent", "#/$defs/BaseFacet"), **body}


def _iso(value: str) -> str:
    return value.replace(" ", "T") + ("Z" if value and not value.endswith("Z") else "")


def render(engine: Engine, fmt: str, complete: bool = False) -> str:
    """The export as text in `fmt` (json, markdown or openlineage)."""
    if fmt == "openlineage":
        return "\n".join(json.dumps(e, default=str) for e in openlineage_events(engine)) + "\n"
    data = snapshot(engine, complete)
    return to_markdown(data) if fmt == "markdown" else to_json(data) + "\n"
