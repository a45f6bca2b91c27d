/** The JSON the dashboard reads from the Sluice HTTP API (README "API", docs/dashboard.md): its side of the contract. */

export interface KeyInfo {
  id: string
  name: string
  scopes: string[]
  created_at: string
  revoked_at: string | null
  last_used_at: string | null
}

export interface Session {
  signed_in: boolean
  key?: KeyInfo
  expires_at?: string
}

// The API's own types, imported as types only: the bundle gets none of storage/'s code, and the two cannot drift.
import type { FieldType, LinkState, RecordView, RuleCounters, UploadLink } from '../../storage/index.ts'

export type { SftpUserView } from '../../pipeline/files/sftp-user.ts'
export type {
  FieldSpec,
  FieldType,
  ObjectSchemaDoc,
  ObjectStats,
  RecordPage,
  RecordView,
  RuleCounters,
  SchemaChange,
  SchemaVersion,
  StoredDecision,
} from '../../storage/index.ts'

/** An upload link as `GET /upload-links` lists it: with its state worked out. */
export type UploadLinkView = UploadLink & { state: LinkState }

export const FIELD_TYPES: readonly FieldType[] = ['string', 'integer', 'number', 'boolean', 'timestamp', 'json']

/** One second of the live feed (`GET /events`, event `tick`). */
export interface LiveTick {
  at: number
  records: Record<string, number>
  alerts: number
  not_forwarded: Record<string, number>
}

/** A record the live feed forwarded: as JetStream has it, before the sink stored it. */
export interface LiveRecord extends Omit<RecordView, 'seq' | 'stored_at'> {
  object: string
}

export type DecisionName = 'approve' | 'review' | 'block'

/** A rule hit: a live alert (`alerts.<object>.<rule_id>`) or a stored one (`GET /alerts`). */
export interface Alert {
  record_id: string
  object: string
  account_id: string | null
  rule_id: string
  rule_name?: string
  rule_version: number
  score: number
  severity: string
  tags: string[]
  decision: DecisionName
  features: Record<string, number>
  record_time: string
  evaluated_at: string
}

/** What `POST /rules/test` answers: the decision the rule stage would make on one record. */
export interface TestDecision {
  decision: DecisionName
  score: number
  tags: string[]
  fired: { rule_id: string; score: number; features: Record<string, number> }[]
  shadow_hits: { rule_id: string; features: Record<string, number> }[]
  errors: { rule_id: string; message: string }[]
  stopped_by: string | null
  evaluations: { rule_id: string; rule_version: number; outcome: 'hit' | 'shadow_hit' | 'miss' | 'error' }[]
}

export interface RuleDefinition {
  id: string
  name: string
  description?: string
  object: string
  order: number
  when: string
  score: number
  severity: 'low' | 'medium' | 'high' | 'critical'
  tags: string[]
  stop: boolean
  mode: 'live' | 'shadow'
  enabled: boolean
  features: Record<string, unknown>
}

export interface StoredRule extends RuleDefinition {
  version: number
  updated_at: string
  updated_by: string
}

export interface RuleSet {
  version: number
  created_at: string | null
  created_by: string | null
  thresholds: Record<string, { review: number; block: number }>
  rules: StoredRule[]
}

export interface RuleStats {
  since: string
  decisions: Record<DecisionName, number>
  rules: RuleCounters[]
}

export type JobState = 'queued' | 'validating' | 'processing' | 'completed' | 'completed_with_errors' | 'failed' | 'cancelled'

export interface JobStatus {
  job_id: string
  object: string | null
  state: JobState
  source: string
  file_name: string | null
  format: string
  payload_bytes: number
  counts: { total: number | null; processed: number; accepted: number; rejected: number; stored: number; evaluated: number }
  progress: { percent: number; stored_percent: number }
  timestamps: Record<string, string | null>
  timings_ms: Record<string, number | null>
  error: string | null
  first_errors: { row: number; record_key: string | null; pointer: string; message: string }[]
  errors_url: string
}

export interface PipelineState {
  streams: { name: string; subjects: string[]; present: boolean; messages: number; bytes: number; first_seq: number; last_seq: number }[]
  consumers: {
    stream: string
    name: string
    role: string
    pending: number
    ack_pending: number
    redelivered: number
    waiting: number
    last_active: string | null
  }[]
}

export interface Readiness {
  ready: boolean
  checks: Record<string, { ok: boolean; detail?: string | number }>
}
