"""The emulator's own endpoints under `/_emulator/`: profile, clock, audit, batches, health,
reset.

They need no key and never fail on purpose: tests and chaos checkers steer and read through them.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from batchd.emulator.endpoint import EMULATOR, json_response
from batchd.emulator.faults import FaultProfile
from batchd.emulator.state import ApiFailure, Emulator, rfc3339
from batchd.errors import ConfigError


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ApiFailure(400, "invalid_request_error", f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiFailure(400, "invalid_request_error", "body must be a JSON object")
    return data


def _profile_json(emulator: Emulator) -> dict[str, Any]:
    return emulator.profile.to_dict() | {"seed": emulator.injector.seed}


async def get_profile(request: web.Request) -> web.StreamResponse:
    return json_response(_profile_json(request.app[EMULATOR]))


async def set_profile(request: web.Request) -> web.StreamResponse:
    """POST: the startup profile with the given keys changed; PATCH: the current one."""
    emulator = request.app[EMULATOR]
    data = await _json_object(request)
    base = emulator.config.profile if request.method == "POST" else emulator.profile
    try:
        profile = FaultProfile.from_mapping(data, base)
    except ConfigError as exc:
        raise ApiFailure(400, "invalid_request_error", str(exc)) from None
    emulator.set_profile(profile)
    return json_response(_profile_json(emulator))


async def get_audit(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[EMULATOR].audit())


async def get_batches(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[EMULATOR].batches())


def _clock_json(emulator: Emulator) -> dict[str, Any]:
    """The emulator clock; `now` and `epoch` as reported to clients, with `offset` applied."""
    offset = emulator.profile.clock_offset
    now = emulator.now() + offset
    return {"now": rfc3339(now), "epoch": now, "scale": emulator.clock.scale, "offset": offset}


def _number(data: dict[str, Any], key: str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ApiFailure(400, "invalid_request_error", f"{key}: a number >= 0")
    return float(value)


async def advance_clock(request: web.Request) -> web.StreamResponse:
    emulator = request.app[EMULATOR]
    data = await _json_object(request)
    if "seconds" not in data:
        raise ApiFailure(400, "invalid_request_error", "seconds: Field required")
    emulator.clock.advance(_number(data, "seconds"))
    return json_response(_clock_json(emulator))


async def get_clock(request: web.Request) -> web.StreamResponse:
    return json_response(_clock_json(request.app[EMULATOR]))


async def set_clock(request: web.Request) -> web.StreamResponse:
    emulator = request.app[EMULATOR]
    data = await _json_object(request)
    if "scale" in data:
        emulator.clock.set_scale(_number(data, "scale"))
    if "advance" in data:
        emulator.clock.advance(_number(data, "advance"))
    return json_response(_clock_json(emulator))


async def reset(request: web.Request) -> web.StreamResponse:
    emulator = request.app[EMULATOR]
    emulator.reset()
    return json_response({"reset": True, "clock": _clock_json(emulator)})


async def health(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ok"})


async def get_config(request: web.Request) -> web.StreamResponse:
    config = request.app[EMULATOR].config
    return json_response(
        {
            "api_keys": len(config.api_keys),
            "max_body_bytes": config.max_body_bytes,
            "max_batch_requests": config.max_batch_requests,
            "expiry_seconds": config.expiry_seconds,
            "retention_seconds": config.retention_seconds,
            "clock_scale": config.clock_scale,
        }
    )


def add_routes(router: web.UrlDispatcher) -> None:
    admin = "/_emulator"
    router.add_get(admin + "/health", health, allow_head=False)
    router.add_get(admin + "/config", get_config, allow_head=False)
    router.add_get(admin + "/profile", get_profile, allow_head=False)
    router.add_post(admin + "/profile", set_profile)
    router.add_patch(admin + "/profile", set_profile)
    router.add_get(admin + "/audit", get_audit, allow_head=False)
    router.add_get(admin + "/batches", get_batches, allow_head=False)
    router.add_get(admin + "/clock", get_clock, allow_head=False)
    router.add_post(admin + "/clock", set_clock)
    router.add_post(admin + "/advance", advance_clock)
    router.add_post(admin + "/reset", reset)
