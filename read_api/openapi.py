"""OpenAPI descriptions of the error responses each route can give (CONTRACT 4.6)."""

from __future__ import annotations

from litestar.openapi import ResponseSpec

from read_api.schemas import ErrorBody

_DESCRIPTIONS = {
    400: "Invalid parameter or body (`invalid_parameter`, `invalid_cursor`, `invalid_limit`, ...)",
    401: "Missing, unknown or revoked API key (`missing_api_key`, `invalid_api_key`)",
    403: "Read key on a change (`read_only_key`) or operator key on tenant data (`tenant_key_required`)",
    404: "No such object for this tenant (`not_found`); another tenant's objects are 404 too",
    409: "The profile is being changed by a worker right now (`profile_busy`); retry after `Retry-After`",
    429: "This tenant already runs its maximum of exports (`too_many_exports`); retry after `Retry-After`",
    503: "Postgres or Redis unreachable (`unavailable`); retry after `Retry-After`",
}


def errors_for(*statuses: int) -> dict[int, ResponseSpec]:
    return {s: ResponseSpec(data_container=ErrorBody, description=_DESCRIPTIONS[s], generate_examples=False)
            for s in statuses}
