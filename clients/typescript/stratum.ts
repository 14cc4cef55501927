// TypeScript types of the Stratum CDP ingest and read APIs, generated from their OpenAPI
// documents by `python clients/typescript/codegen.py > clients/typescript/stratum.ts`.
// Do not edit by hand: tests/test_typescript_types.py fails when this file and the APIs disagree.
// Types only (nothing at run time): import them with `import type { ... } from "./stratum"`.

export interface Anomaly {
  source_id: string;
  hour: string;
  observed: number;
  expected: number;
  score: number;
  kind: string;
}

export interface AnomalyList {
  anomalies: Anomaly[];
}

export interface ComputedTraitList {
  computed_traits: ComputedTraitOut[];
}

export interface ComputedTraitOut {
  id: string;
  name: string;
  function: string;
  event: string;
  property: string | null;
  within_days: number;
  created_at: string;
  updated_at: string;
}

export interface ConsentChange {
  consent_type: string;
  granted: boolean;
  recorded_at: string;
  source_id: string | null;
  event_id: string | null;
  ip: string | null;
  user_agent: string | null;
}

export interface ConsentIn {
  analytics?: boolean | null;
  ads?: boolean | null;
  email?: boolean | null;
  sms?: boolean | null;
  all?: boolean | null;
}

export interface ConsentState {
  granted: boolean;
  updated_at: string;
  source_id: string | null;
}

export interface ConsentUpdate {
  consents: Record<string, boolean>;
}

export interface Consents {
  consents: Record<string, ConsentState>;
  history: ConsentChange[];
}

export interface Counters {
  events: number;
  purchases: number;
  revenue: number;
}

export interface DailyVolume {
  source_id: string;
  day: string;
  events: number;
}

export interface DeadLetters {
  tenant_id: string;
  tenant_name: string;
  count: number;
  latest_at: string | null;
}

export interface Decision {
  at: string;
  event_id: string | null;
  kind: string;
  identifiers: DecisionIdentifier[];
  rule: string | null;
  message: string;
}

export interface DecisionCounts {
  now: Record<string, number>;
  would_be: Record<string, number>;
}

export interface DecisionIdentifier {
  type: string;
  hash: string | null;
}

export interface DecisionPage {
  decisions: Decision[];
  next_cursor: string | null;
}

export interface DeliveriesPerMinute {
  minute: string;
  delivered: number;
  failed: number;
  skipped: number;
}

export interface Delivery {
  id: string;
  message_id: string;
  topic: string;
  status: string;
  attempts: number;
  last_status_code: number | null;
  last_error: string | null;
  next_attempt_at: string | null;
  created_at: string;
  delivered_at: string | null;
  skip_reason: string | null;
}

export interface DeliveryPage {
  deliveries: Delivery[];
  next_cursor: string | null;
}

export interface DeliveryRetry {
  status?: string | null;
  ids?: string[] | null;
}

export interface Destination {
  id: string;
  name: string;
  type: string;
  url: string;
  topics: string[];
  event_names: string[] | null;
  consent: string | null;
  active: boolean;
  created_at: string;
  batch_size: number;
}

export interface DestinationCreate {
  name: string;
  url: string;
  topics: string[];
  type?: string;
  event_names?: string[] | null;
  consent?: string | null;
  active?: boolean;
  batch_size?: number;
}

export interface DestinationHealth {
  id: string;
  tenant_id: string;
  tenant_name: string;
  name: string;
  active: boolean;
  delivered_1h: number;
  failed_1h: number;
  success_rate_1h: number | null;
  undelivered: number;
  lag_s: number | null;
  dead: number;
  breaker: string;
  consecutive_failures: number;
}

export interface DestinationList {
  destinations: Destination[];
}

export interface DestinationPatch {
  name?: string;
  url?: string;
  topics?: string[];
  event_names?: string[] | null;
  consent?: string | null;
  active?: boolean;
  batch_size?: number;
}

export interface DestinationWithSecret {
  id: string;
  name: string;
  type: string;
  url: string;
  topics: string[];
  event_names: string[] | null;
  consent: string | null;
  active: boolean;
  created_at: string;
  batch_size: number;
  secret: string;
}

export interface DestinationsHealth {
  destinations: DestinationHealth[];
  per_minute: DeliveriesPerMinute[];
}

export interface DryRunReport {
  events: number;
  profiles: SideCounts;
  merges: SideCounts;
  decisions: DecisionCounts;
  examples: Record<string, unknown>[];
  truncated: boolean;
}

export interface DryRunRequest {
  from: string;
  to: string;
  rules?: Record<string, unknown>;
}

export interface EdgeEvidence {
  event_id: string | null;
}

export interface EmqDistribution {
  mean: number;
  bands: Record<string, number>;
}

export interface ErasedCounts {
  profiles: number;
  identifiers: number;
  events: number;
  consents: number;
}

export interface Erasure {
  erased: ErasedCounts;
}

export interface ErrorBody {
  code: string;
  message: string;
  status: number;
  errors?: Record<string, unknown>[];
}

export interface Event {
  event_id: string;
  event_name: string;
  event_type: string;
  event_time: string;
  received_at: string;
  source_id: string;
  properties: Record<string, unknown>;
  context: Record<string, unknown>;
  emq: number;
  identifiers: EventIdentifier[];
  decisions: Record<string, unknown>[];
}

export interface EventIdentifier {
  type: string;
  hash: string;
}

export interface EventPage {
  events: Event[];
  next_cursor: string | null;
}

export interface EventStatus {
  event_id: string;
  status: string;
  profile_id: string | null;
}

export interface Explanation {
  same_profile: boolean;
  path: PathStep[];
  blocking_decisions: Decision[];
}

export interface FailedJob {
  job_id: string;
  reason: string;
  enqueued_at: string | null;
  ended_at: string | null;
  worker_name: string | null;
}

export interface FailedJobs {
  failed: FailedJob[];
  total: number;
}

export interface Graph {
  nodes: GraphNode[];
  edges: GraphEdge[];
  merges: GraphMerge[];
}

export interface GraphEdge {
  from: string;
  to: string;
  link_type: string;
  evidence: EdgeEvidence;
}

export interface GraphMerge {
  id: string;
  survivor: string;
  absorbed: string;
  trigger: string;
  at: string;
}

export interface GraphNode {
  type: string;
  hash: string;
  first_seen: string;
}

export interface HourlyVolume {
  source_id: string;
  hour: string;
  events: number;
}

export interface IdentifierIn {
  type: string;
  value: string;
  signature?: unknown;
}

export interface Members {
  profiles: string[];
  next_cursor: string | null;
}

/** Body of POST /api/v1/cdp/events. */
export interface NativeBatch {
  events: NativeEvent[];
  writeKey?: string | null;
  api_key?: string | null;
}

/** One event of ``POST /api/v1/cdp/events`` (CONTRACT 4.1). */
export interface NativeEvent {
  event_name: string;
  event_time: string;
  identifiers: IdentifierIn[];
  idempotency_key?: string | null;
  properties?: Record<string, unknown>;
  context?: Record<string, unknown>;
  traits?: Record<string, unknown>;
  consent?: ConsentIn | null;
}

export interface OpsStatus {
  at: string;
  queues: Record<string, Record<string, unknown>>;
  workers: WorkerInfo[];
  throughput: Throughput;
  dead_letters: DeadLetters[];
}

export interface OpsVolume {
  hours: number;
  sources: SourceVolume[];
}

export interface PathStep {
  from: string;
  to: string;
  link_type: string;
  event_id: string | null;
  at: string;
}

export interface Preview {
  size: number;
  sample: string[];
}

export interface Profile {
  id: string;
  lifecycle: string;
  traits: Record<string, unknown>;
  identifiers: ProfileIdentifier[];
  consents: Record<string, ConsentState>;
  counters: Counters;
  first_seen: string;
  last_seen: string;
  merged_from?: string | null;
  computed?: Record<string, unknown>;
}

export interface ProfileIdentifier {
  type: string;
  hash: string;
  first_seen: string;
  last_seen: string;
}

export interface ReplayQueued {
  queued: number;
}

export interface ReplayRequest {
  from: string;
  to?: string;
}

export interface Replayed {
  replayed: number;
  not_replayed?: Record<string, string>[];
}

export interface Segment {
  id: string;
  name: string;
  kind: string;
  rules: Record<string, unknown>;
  size: number;
  created_at: string;
  updated_at: string;
}

/** Body of POST /v1/batch, /v1/import and /v1/b. */
export interface SegmentBatch {
  batch: SegmentMessage[];
  sentAt?: string | null;
  writeKey?: string | null;
  context?: Record<string, unknown> | null;
  integrations?: Record<string, unknown> | null;
}

export interface SegmentFields {
  traits: string[];
  events: string[];
  computed: string[];
}

export interface SegmentHistory {
  points: SizePoint[];
}

export interface SegmentList {
  segments: Segment[];
}

export interface SegmentMessage {
  type?: string | null;
  messageId?: string | number | null;
  userId?: string | number | null;
  anonymousId?: string | number | null;
  previousId?: string | number | null;
  groupId?: string | number | null;
  event?: string | null;
  name?: string | null;
  category?: string | null;
  properties?: Record<string, unknown> | null;
  traits?: Record<string, unknown> | null;
  context?: Record<string, unknown> | null;
  integrations?: Record<string, unknown> | null;
  timestamp?: string | null;
  originalTimestamp?: string | null;
  sentAt?: string | null;
}

/** Body of POST /v1/track, /v1/identify, /v1/page, /v1/screen, /v1/group and /v1/alias: one message, which may carry the write key. */
export interface SegmentSingle {
  type?: string | null;
  messageId?: string | number | null;
  userId?: string | number | null;
  anonymousId?: string | number | null;
  previousId?: string | number | null;
  groupId?: string | number | null;
  event?: string | null;
  name?: string | null;
  category?: string | null;
  properties?: Record<string, unknown> | null;
  traits?: Record<string, unknown> | null;
  context?: Record<string, unknown> | null;
  integrations?: Record<string, unknown> | null;
  timestamp?: string | null;
  originalTimestamp?: string | null;
  sentAt?: string | null;
  writeKey?: string | null;
}

export interface SideCounts {
  now: number;
  would_be: number;
}

export interface SizePoint {
  at: string;
  size: number;
}

export interface Source {
  id: string;
  name: string;
  type: string;
  active: boolean;
  phone_region: string | null;
  rate_limit: number | null;
  allowed_origins: string[];
  identity_verification: string;
  created_at: string;
}

export interface SourceCreate {
  name: string;
  type?: string;
  phone_region?: string | null;
  rate_limit?: number | null;
  allowed_origins?: string[];
  identity_verification?: string | null;
}

export interface SourceList {
  sources: Source[];
}

export interface SourcePatch {
  name?: string;
  active?: boolean;
  phone_region?: string | null;
  rate_limit?: number | null;
  allowed_origins?: string[];
  identity_verification?: string | null;
  type?: string;
}

export interface SourceVolume {
  source_id: string;
  tenant_id: string;
  name: string;
  points: VolumePoint[];
  anomalies: VolumeAnomaly[];
}

export interface SourceWithIdentitySecret {
  id: string;
  name: string;
  type: string;
  active: boolean;
  phone_region: string | null;
  rate_limit: number | null;
  allowed_origins: string[];
  identity_verification: string;
  created_at: string;
  identity_secret: string;
}

export interface SourceWithKey {
  id: string;
  name: string;
  type: string;
  active: boolean;
  phone_region: string | null;
  rate_limit: number | null;
  allowed_origins: string[];
  identity_verification: string;
  created_at: string;
  write_key: string;
  identity_secret?: string;
}

export interface Stats {
  volume: Volume;
  emq: EmqDistribution;
  identity_match_rate: number;
  profiles_by_lifecycle: Record<string, number>;
  window: Record<string, string>;
}

export interface Throughput {
  events_in_per_s: number;
  events_out_per_s: number | null;
  window_s: number;
}

export interface Unmerge {
  merge_id: string;
  survivor: string;
  absorbed: string;
  undone_at: string;
}

export interface UnmergeRequest {
  merge_id: string | number;
}

export interface Volume {
  hourly: HourlyVolume[];
  daily: DailyVolume[];
}

export interface VolumeAnomaly {
  hour: string;
  kind: string;
  observed: number;
  expected: number;
  score: number;
}

export interface VolumePoint {
  hour: string;
  observed: number;
  expected: number | null;
  low: number | null;
  high: number | null;
}

export interface WorkerInfo {
  name: string;
  state: string;
  alive: boolean;
  queues: string[];
  current_job_id: string | null;
  successful_jobs: number;
  failed_jobs: number;
  birth: string | null;
  last_heartbeat: string | null;
}

export interface destination_schemas_Requeued {
  requeued: number;
}

export interface ops_destinations_Requeued {
  requeued: number;
}

/** Every route of the ingest API: parameters, JSON body and responses by status code. */
export interface IngestApiPaths {
  "/api/v1/cdp/events": {
    post: {
      body: NativeBatch;
      responses: {
        202: unknown;
      };
    };
  };
  "/batch": {
    post: {
      responses: {
        200: unknown;
      };
    };
  };
  "/capture": {
    post: {
      responses: {
        200: unknown;
      };
    };
  };
  "/e": {
    post: {
      responses: {
        200: unknown;
      };
    };
  };
  "/health": {
    get: {
      responses: {
        200: Record<string, string>;
      };
    };
  };
  "/i/v0/e": {
    post: {
      responses: {
        200: unknown;
      };
    };
  };
  "/metrics": {
    get: {
      responses: {
        200: unknown;
      };
    };
  };
  "/ready": {
    get: {
      responses: {
        200: unknown;
      };
    };
  };
  "/v1/alias": {
    post: {
      body: SegmentSingle;
      responses: {
        200: unknown;
      };
    };
  };
  "/v1/b": {
    post: {
      body: SegmentBatch;
      responses: {
        200: unknown;
      };
    };
  };
  "/v1/batch": {
    post: {
      body: SegmentBatch;
      responses: {
        200: unknown;
      };
    };
  };
  "/v1/group": {
    post: {
      body: SegmentSingle;
      responses: {
        200: unknown;
      };
    };
  };
  "/v1/identify": {
    post: {
      body: SegmentSingle;
      responses: {
        200: unknown;
      };
    };
  };
  "/v1/import": {
    post: {
      body: SegmentBatch;
      responses: {
        200: unknown;
      };
    };
  };
  "/v1/page": {
    post: {
      body: SegmentSingle;
      responses: {
        200: unknown;
      };
    };
  };
  "/v1/screen": {
    post: {
      body: SegmentSingle;
      responses: {
        200: unknown;
      };
    };
  };
  "/v1/track": {
    post: {
      body: SegmentSingle;
      responses: {
        200: unknown;
      };
    };
  };
}

/** Every route of the read API: parameters, JSON body and responses by status code. */
export interface ReadApiPaths {
  "/api/v1/cdp/anomalies": {
    get: {
      query: {
        from?: string | null;
        to?: string | null;
      };
      responses: {
        200: AnomalyList;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/computed-traits": {
    get: {
      responses: {
        200: ComputedTraitList;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
    post: {
      body: Record<string, unknown>;
      responses: {
        201: ComputedTraitOut;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        409: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/computed-traits/{trait_id}": {
    get: {
      path: {
        trait_id: string;
      };
      responses: {
        200: ComputedTraitOut;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
    patch: {
      path: {
        trait_id: string;
      };
      body: Record<string, unknown>;
      responses: {
        200: ComputedTraitOut;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        409: ErrorBody;
        503: ErrorBody;
      };
    };
    delete: {
      path: {
        trait_id: string;
      };
      responses: {
        200: ComputedTraitOut;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/destinations": {
    get: {
      responses: {
        200: DestinationList;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
    post: {
      body: DestinationCreate;
      responses: {
        201: DestinationWithSecret;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        409: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/destinations/{destination_id}": {
    get: {
      path: {
        destination_id: string;
      };
      responses: {
        200: Destination;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
    patch: {
      path: {
        destination_id: string;
      };
      body: DestinationPatch;
      responses: {
        200: Destination;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        409: ErrorBody;
        503: ErrorBody;
      };
    };
    delete: {
      path: {
        destination_id: string;
      };
      responses: {
        200: Destination;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/destinations/{destination_id}/deliveries": {
    get: {
      path: {
        destination_id: string;
      };
      query: {
        status?: string | null;
        cursor?: string | null;
        limit?: number;
      };
      responses: {
        200: DeliveryPage;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/destinations/{destination_id}/deliveries/retry": {
    post: {
      path: {
        destination_id: string;
      };
      body: DeliveryRetry;
      responses: {
        200: destination_schemas_Requeued;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/destinations/{destination_id}/replay": {
    post: {
      path: {
        destination_id: string;
      };
      body: ReplayRequest;
      responses: {
        202: ReplayQueued;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        409: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/destinations/{destination_id}/rotate-secret": {
    post: {
      path: {
        destination_id: string;
      };
      responses: {
        200: DestinationWithSecret;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/events/{event_id}": {
    get: {
      path: {
        event_id: string;
      };
      responses: {
        200: EventStatus;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/export/events": {
    get: {
      query: {
        format?: string | null;
        from?: string | null;
        to?: string | null;
      };
      responses: {
        200: string;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        429: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/export/profiles": {
    get: {
      query: {
        format?: string | null;
        from?: string | null;
        to?: string | null;
      };
      responses: {
        200: string;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        429: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/identity/dry-run": {
    post: {
      body: DryRunRequest;
      responses: {
        200: DryRunReport;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        409: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/identity/explain": {
    get: {
      query: {
        a_type?: string | null;
        a_value?: string | null;
        a_hash?: string | null;
        b_type?: string | null;
        b_value?: string | null;
        b_hash?: string | null;
        phone_region?: string | null;
      };
      responses: {
        200: Explanation;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/profiles": {
    get: {
      query: {
        identifier_type?: string | null;
        identifier_value?: string | null;
        identifier_hash?: string | null;
        phone_region?: string | null;
      };
      responses: {
        200: Profile;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/profiles/{profile_id}": {
    get: {
      path: {
        profile_id: string;
      };
      responses: {
        200: Profile;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
    delete: {
      path: {
        profile_id: string;
      };
      query: {
        suppress?: boolean;
      };
      responses: {
        200: Erasure;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        409: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/profiles/{profile_id}/consents": {
    get: {
      path: {
        profile_id: string;
      };
      responses: {
        200: Consents;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
    put: {
      path: {
        profile_id: string;
      };
      body: ConsentUpdate;
      responses: {
        200: Consents;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        409: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/profiles/{profile_id}/decisions": {
    get: {
      path: {
        profile_id: string;
      };
      query: {
        cursor?: string | null;
        limit?: number | null;
      };
      responses: {
        200: DecisionPage;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/profiles/{profile_id}/events": {
    get: {
      path: {
        profile_id: string;
      };
      query: {
        limit?: number | null;
        cursor?: string | null;
      };
      responses: {
        200: EventPage;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/profiles/{profile_id}/graph": {
    get: {
      path: {
        profile_id: string;
      };
      responses: {
        200: Graph;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/profiles/{profile_id}/unmerge": {
    post: {
      path: {
        profile_id: string;
      };
      body: UnmergeRequest;
      responses: {
        200: Unmerge;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        409: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/segments": {
    get: {
      responses: {
        200: SegmentList;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
    post: {
      body: Record<string, unknown>;
      responses: {
        201: Segment;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        409: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/segments/fields": {
    get: {
      responses: {
        200: SegmentFields;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/segments/preview": {
    post: {
      body: Record<string, unknown>;
      responses: {
        200: Preview;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/segments/{segment_id}": {
    get: {
      path: {
        segment_id: string;
      };
      responses: {
        200: Segment;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
    patch: {
      path: {
        segment_id: string;
      };
      body: Record<string, unknown>;
      responses: {
        200: Segment;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        409: ErrorBody;
        503: ErrorBody;
      };
    };
    delete: {
      path: {
        segment_id: string;
      };
      responses: {
        200: Segment;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/segments/{segment_id}/history": {
    get: {
      path: {
        segment_id: string;
      };
      responses: {
        200: SegmentHistory;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/segments/{segment_id}/members": {
    get: {
      path: {
        segment_id: string;
      };
      query: {
        cursor?: string | null;
        limit?: number;
      };
      responses: {
        200: Members;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/sources": {
    get: {
      responses: {
        200: SourceList;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
    post: {
      body: SourceCreate;
      responses: {
        201: SourceWithKey;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/sources/{source_id}": {
    patch: {
      path: {
        source_id: string;
      };
      body: SourcePatch;
      responses: {
        200: Source;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/sources/{source_id}/rotate-identity-secret": {
    post: {
      path: {
        source_id: string;
      };
      responses: {
        200: SourceWithIdentitySecret;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/sources/{source_id}/rotate-key": {
    post: {
      path: {
        source_id: string;
      };
      responses: {
        200: SourceWithKey;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/cdp/stats": {
    get: {
      responses: {
        200: Stats;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/ops/destinations": {
    get: {
      responses: {
        200: DestinationsHealth;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/ops/destinations/{destination_id}/retry": {
    post: {
      path: {
        destination_id: string;
      };
      responses: {
        200: ops_destinations_Requeued;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/ops/failed": {
    get: {
      query: {
        limit?: number;
      };
      responses: {
        200: FailedJobs;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/ops/failed/replay-all": {
    post: {
      responses: {
        200: Replayed;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/ops/failed/{job_id}/replay": {
    post: {
      path: {
        job_id: string;
      };
      responses: {
        200: Replayed;
        400: {
          status_code: number;
          detail: string;
          extra?: null | Record<string, unknown> | unknown[];
        };
        401: ErrorBody;
        403: ErrorBody;
        404: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/ops/status": {
    get: {
      responses: {
        200: OpsStatus;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/api/v1/ops/volume": {
    get: {
      query: {
        hours?: number;
      };
      responses: {
        200: OpsVolume;
        400: ErrorBody;
        401: ErrorBody;
        403: ErrorBody;
        503: ErrorBody;
      };
    };
  };
  "/health": {
    get: {
      responses: {
        200: Record<string, string>;
      };
    };
  };
  "/metrics": {
    get: {
      responses: {
        200: unknown;
      };
    };
  };
  "/ready": {
    get: {
      responses: {
        200: unknown;
      };
    };
  };
}
