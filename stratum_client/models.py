"""Response models of the Stratum read API, generated from its OpenAPI document by
``python -m stratum_client._codegen``; do not edit by hand (tests/test_client.py fails on drift)."""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict  # noqa: F401 - not every name is used each time


class Anomaly(TypedDict):
    source_id: str
    hour: str
    observed: int
    expected: float
    score: float
    kind: str

class AnomalyList(TypedDict):
    anomalies: list[Anomaly]

class ComputedTraitList(TypedDict):
    computed_traits: list[ComputedTraitOut]

class ComputedTraitOut(TypedDict):
    id: str
    name: str
    function: str
    event: str
    property: str | None
    within_days: int
    created_at: str
    updated_at: str

class ConsentChange(TypedDict):
    consent_type: str
    granted: bool
    recorded_at: str
    source_id: str | None
    event_id: str | None
    ip: str | None
    user_agent: str | None

class ConsentState(TypedDict):
    granted: bool
    updated_at: str
    source_id: str | None

class ConsentUpdate(TypedDict):
    consents: dict[str, bool]

class Consents(TypedDict):
    consents: dict[str, ConsentState]
    history: list[ConsentChange]

class Counters(TypedDict):
    events: int
    purchases: int
    revenue: float

class DailyVolume(TypedDict):
    source_id: str
    day: str
    events: int

class DeadLetters(TypedDict):
    tenant_id: str
    tenant_name: str
    count: int
    latest_at: str | None

class Decision(TypedDict):
    at: str
    event_id: str | None
    kind: str
    identifiers: list[DecisionIdentifier]
    rule: str | None
    message: str

class DecisionCounts(TypedDict):
    now: dict[str, int]
    would_be: dict[str, int]

class DecisionIdentifier(TypedDict):
    type: str
    hash: str | None

class DecisionPage(TypedDict):
    decisions: list[Decision]
    next_cursor: str | None

class DeliveriesPerMinute(TypedDict):
    minute: str
    delivered: int
    failed: int
    skipped: int

class Delivery(TypedDict):
    id: str
    message_id: str
    topic: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None
    skip_reason: str | None

class DeliveryPage(TypedDict):
    deliveries: list[Delivery]
    next_cursor: str | None

class DeliveryRetry(TypedDict):
    status: NotRequired[str | None]
    ids: NotRequired[list[str] | None]

class Destination(TypedDict):
    id: str
    name: str
    type: str
    url: str
    topics: list[str]
    event_names: list[str] | None
    consent: str | None
    active: bool
    created_at: str
    batch_size: int

class DestinationCreate(TypedDict):
    name: str
    url: str
    topics: list[str]
    type: NotRequired[str]
    event_names: NotRequired[list[str] | None]
    consent: NotRequired[str | None]
    active: NotRequired[bool]
    batch_size: NotRequired[int]

class DestinationHealth(TypedDict):
    id: str
    tenant_id: str
    tenant_name: str
    name: str
    active: bool
    delivered_1h: int
    failed_1h: int
    success_rate_1h: float | None
    undelivered: int
    lag_s: float | None
    dead: int
    breaker: str
    consecutive_failures: int

class DestinationList(TypedDict):
    destinations: list[Destination]

class DestinationPatch(TypedDict):
    name: NotRequired[str]
    url: NotRequired[str]
    topics: NotRequired[list[str]]
    event_names: NotRequired[list[str] | None]
    consent: NotRequired[str | None]
    active: NotRequired[bool]
    batch_size: NotRequired[int]

class DestinationWithSecret(TypedDict):
    id: str
    name: str
    type: str
    url: str
    topics: list[str]
    event_names: list[str] | None
    consent: str | None
    active: bool
    created_at: str
    batch_size: int
    secret: str

class DestinationsHealth(TypedDict):
    destinations: list[DestinationHealth]
    per_minute: list[DeliveriesPerMinute]

class DryRunReport(TypedDict):
    events: int
    profiles: SideCounts
    merges: SideCounts
    decisions: DecisionCounts
    examples: list[dict[str, Any]]
    truncated: bool

DryRunRequest = TypedDict('DryRunRequest', {
    'from': 'str',
    'to': 'str',
    'rules': 'NotRequired[dict[str, Any]]',
})

class EdgeEvidence(TypedDict):
    event_id: str | None

class EmqDistribution(TypedDict):
    mean: float
    bands: dict[str, int]

class ErasedCounts(TypedDict):
    profiles: int
    identifiers: int
    events: int
    consents: int

class Erasure(TypedDict):
    erased: ErasedCounts

class ErrorBody(TypedDict):
    code: str
    message: str
    status: int
    errors: NotRequired[list[dict[str, Any]]]

class Event(TypedDict):
    event_id: str
    event_name: str
    event_type: str
    event_time: str
    received_at: str
    source_id: str
    properties: dict[str, Any]
    context: dict[str, Any]
    emq: int
    identifiers: list[EventIdentifier]
    decisions: list[dict[str, Any]]

class EventIdentifier(TypedDict):
    type: str
    hash: str

class EventPage(TypedDict):
    events: list[Event]
    next_cursor: str | None

class EventStatus(TypedDict):
    event_id: str
    status: str
    profile_id: str | None

class Explanation(TypedDict):
    same_profile: bool
    path: list[PathStep]
    blocking_decisions: list[Decision]

class FailedJob(TypedDict):
    job_id: str
    reason: str
    enqueued_at: str | None
    ended_at: str | None
    worker_name: str | None

class FailedJobs(TypedDict):
    failed: list[FailedJob]
    total: int

class Graph(TypedDict):
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    merges: list[GraphMerge]

GraphEdge = TypedDict('GraphEdge', {
    'from': 'str',
    'to': 'str',
    'link_type': 'str',
    'evidence': 'EdgeEvidence',
})

class GraphMerge(TypedDict):
    id: str
    survivor: str
    absorbed: str
    trigger: str
    at: str

class GraphNode(TypedDict):
    type: str
    hash: str
    first_seen: str

class HourlyVolume(TypedDict):
    source_id: str
    hour: str
    events: int

class Members(TypedDict):
    profiles: list[str]
    next_cursor: str | None

class OpsStatus(TypedDict):
    at: str
    queues: dict[str, dict[str, Any]]
    workers: list[WorkerInfo]
    throughput: Throughput
    dead_letters: list[DeadLetters]

class OpsVolume(TypedDict):
    hours: int
    sources: list[SourceVolume]

PathStep = TypedDict('PathStep', {
    'from': 'str',
    'to': 'str',
    'link_type': 'str',
    'event_id': 'str | None',
    'at': 'str',
})

class Preview(TypedDict):
    size: int
    sample: list[str]

class Profile(TypedDict):
    id: str
    lifecycle: str
    traits: dict[str, Any]
    identifiers: list[ProfileIdentifier]
    consents: dict[str, ConsentState]
    counters: Counters
    first_seen: str
    last_seen: str
    merged_from: NotRequired[str | None]
    computed: NotRequired[dict[str, Any]]

class ProfileIdentifier(TypedDict):
    type: str
    hash: str
    first_seen: str
    last_seen: str

class ReplayQueued(TypedDict):
    queued: int

ReplayRequest = TypedDict('ReplayRequest', {
    'from': 'str',
    'to': 'NotRequired[str]',
})

class Replayed(TypedDict):
    replayed: int
    not_replayed: NotRequired[list[dict[str, str]]]

class Segment(TypedDict):
    id: str
    name: str
    kind: str
    rules: dict[str, Any]
    size: int
    created_at: str
    updated_at: str

class SegmentFields(TypedDict):
    traits: list[str]
    events: list[str]
    computed: list[str]

class SegmentHistory(TypedDict):
    points: list[SizePoint]

class SegmentList(TypedDict):
    segments: list[Segment]

class SideCounts(TypedDict):
    now: int
    would_be: int

class SizePoint(TypedDict):
    at: str
    size: int

class Source(TypedDict):
    id: str
    name: str
    type: str
    active: bool
    phone_region: str | None
    rate_limit: int | None
    allowed_origins: list[str]
    identity_verification: str
    created_at: str

class SourceCreate(TypedDict):
    name: str
    type: NotRequired[str]
    phone_region: NotRequired[str | None]
    rate_limit: NotRequired[int | None]
    allowed_origins: NotRequired[list[str]]
    identity_verification: NotRequired[str | None]

class SourceList(TypedDict):
    sources: list[Source]

class SourcePatch(TypedDict):
    name: NotRequired[str]
    active: NotRequired[bool]
    phone_region: NotRequired[str | None]
    rate_limit: NotRequired[int | None]
    allowed_origins: NotRequired[list[str]]
    identity_verification: NotRequired[str | None]
    type: NotRequired[str]

class SourceVolume(TypedDict):
    source_id: str
    tenant_id: str
    name: str
    points: list[VolumePoint]
    anomalies: list[VolumeAnomaly]

class SourceWithIdentitySecret(TypedDict):
    id: str
    name: str
    type: str
    active: bool
    phone_region: str | None
    rate_limit: int | None
    allowed_origins: list[str]
    identity_verification: str
    created_at: str
    identity_secret: str

class SourceWithKey(TypedDict):
    id: str
    name: str
    type: str
    active: bool
    phone_region: str | None
    rate_limit: int | None
    allowed_origins: list[str]
    identity_verification: str
    created_at: str
    write_key: str
    identity_secret: NotRequired[str]

class Stats(TypedDict):
    volume: Volume
    emq: EmqDistribution
    identity_match_rate: float
    profiles_by_lifecycle: dict[str, int]
    window: dict[str, str]

class Throughput(TypedDict):
    events_in_per_s: float
    events_out_per_s: float | None
    window_s: int

class Unmerge(TypedDict):
    merge_id: str
    survivor: str
    absorbed: str
    undone_at: str

class UnmergeRequest(TypedDict):
    merge_id: str | int

class Volume(TypedDict):
    hourly: list[HourlyVolume]
    daily: list[DailyVolume]

class VolumeAnomaly(TypedDict):
    hour: str
    kind: str
    observed: int
    expected: float
    score: float

class VolumePoint(TypedDict):
    hour: str
    observed: int
    expected: float | None
    low: float | None
    high: float | None

class WorkerInfo(TypedDict):
    name: str
    state: str
    alive: bool
    queues: list[str]
    current_job_id: str | None
    successful_jobs: int
    failed_jobs: int
    birth: str | None
    last_heartbeat: str | None

class destination_schemas_Requeued(TypedDict):
    requeued: int

class ops_destinations_Requeued(TypedDict):
    requeued: int
