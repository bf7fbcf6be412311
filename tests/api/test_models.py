"""The models and the test samples agree with the stored OpenAPI description of the API."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from batchd.api import BatchPage, MessageBatch, RequestCounts
from batchd.api.jsonl import parse_result_line

from .helpers import batch_json, error_json, result_line

SPEC = Path(__file__).resolve().parents[1] / "data" / "anthropic-openapi.json"


@cache
def components() -> dict[str, Any]:
    if not SPEC.exists():
        pytest.skip(f"{SPEC} is not present")
    return json.loads(SPEC.read_text())["components"]  # type: ignore[no-any-return]


def validate(instance: Any, schema_name: str) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": components()}
    Draft202012Validator(schema).validate(instance)


@pytest.mark.parametrize("status", ["in_progress", "canceling", "ended"])
def test_batch_samples_match_the_spec_and_parse(status: str) -> None:
    """Sample batches are valid MessageBatch objects, and the model reads them."""
    sample = batch_json(status=status, processing=3)
    validate(sample, "MessageBatch")
    batch = MessageBatch.model_validate(sample)
    assert batch.processing_status == status
    assert batch.total == 3
    assert batch.ended is (status == "ended")


def test_list_page_sample_matches_the_spec() -> None:
    """A list page validates against ListResponse_MessageBatch_ and parses as BatchPage."""
    page = {
        "data": [batch_json("b2"), batch_json("b1")],
        "has_more": False,
        "first_id": "b2",
        "last_id": "b1",
    }
    validate(page, "ListResponse_MessageBatch_")
    assert [b.id for b in BatchPage.model_validate(page).data] == ["b2", "b1"]


@pytest.mark.parametrize("kind", ["succeeded", "errored", "canceled", "expired"])
def test_result_line_samples_match_the_spec(kind: str) -> None:
    """Each kind of results line is a valid MessageBatchIndividualResponse."""
    raw = result_line("id-1", kind)
    validate(orjson.loads(raw), "MessageBatchIndividualResponse")
    assert parse_result_line(raw, 1).type == kind


def test_error_sample_matches_the_spec() -> None:
    """The error body used in tests is a valid ErrorResponse."""
    validate(orjson.loads(error_json("rate_limit_error", "slow")), "ErrorResponse")


def test_unknown_fields_are_ignored() -> None:
    """A field the API adds later does not break parsing."""
    batch = MessageBatch.model_validate(
        batch_json(
            new_field=1,
            request_counts={
                "processing": 1,
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
                "extra": 9,
            },
        )
    )
    assert batch.request_counts == RequestCounts(
        processing=1, succeeded=0, errored=0, canceled=0, expired=0
    )


def test_the_model_has_every_field_of_the_spec() -> None:
    """Every property of the spec's MessageBatch is a field of the model."""
    spec_fields = set(components()["schemas"]["MessageBatch"]["properties"])
    assert spec_fields <= set(MessageBatch.model_fields)
