"""Checking a run's RO-Crate offline: ``rocrate`` reads it back, ``roc-validator`` validates it
against the Process Run Crate profile with its HTTP cache seeded, so that nothing is fetched.

The validator resolves the crate's JSON-LD context (https://w3id.org/ro/crate/1.1/context)
through a requests_cache SQLite cache, and in offline mode answers a miss with an error. The
cache is seeded here with the copy of that context the ``rocrate`` package ships
(``rocrate/data/ro-crate.jsonld``); the profiles themselves ship with the validator.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import requests
import requests_cache
import rocrate
import urllib3

CONTEXT_URL = "https://w3id.org/ro/crate/1.1/context"
PROFILE = "process-run-crate-0.5"


def seed_validator_cache(cache: Path) -> Path:
    """A requests_cache SQLite file at ``cache`` holding the RO-Crate 1.1 context."""
    body = (Path(rocrate.__file__).parent / "data" / "ro-crate.jsonld").read_bytes()
    headers = {"Content-Type": "application/ld+json"}
    response = requests.Response()
    response.status_code = 200
    response.url = CONTEXT_URL
    response._content = body
    response.headers.update(headers)
    response.encoding = "utf-8"
    response.raw = urllib3.HTTPResponse(body=io.BytesIO(body), headers=headers, status=200,
                                        preload_content=False, request_url=CONTEXT_URL)
    response.request = requests.Request("GET", CONTEXT_URL).prepare()
    session = requests_cache.CachedSession(str(cache), backend="sqlite", expire_after=-1)
    try:
        session.cache.save_response(response)
    finally:
        session.close()
    return cache


def validate(crate: Path, cache: Path, severity: str = "REQUIRED") -> list[tuple[str, str, str]]:
    """The validator's issues at ``severity`` for the crate folder, offline: (severity, check,
    message) for each; empty when the crate is valid."""
    from rocrate_validator import models, services

    settings = models.ValidationSettings(
        rocrate_uri=str(crate), profile_identifier=PROFILE,
        requirement_severity=models.Severity[severity], offline=True, cache_path=str(cache),
        skip_availability_check=True)
    result = services.validate(settings)
    issues = [(i.severity.name, str(i.check.identifier), str(i.message))
              for i in result.get_issues()]
    assert result.passed() == (not [i for i in issues if _at_least(i[0], severity)]), issues
    return issues


def _at_least(found: str, wanted: str) -> bool:
    order = ["OPTIONAL", "RECOMMENDED", "REQUIRED"]
    return order.index(found) >= order.index(wanted)


def read_back(crate: Path) -> dict[str, Any]:
    """The crate through ``rocrate``: its entities by id (as JSON), the root's conformsTo."""
    from rocrate.rocrate import ROCrate

    loaded = ROCrate(str(crate))
    return {entity.id: entity.as_jsonld() for entity in loaded.get_entities()}
