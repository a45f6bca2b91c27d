import { randomBytes } from 'node:crypto'
import type { Statement } from 'better-sqlite3'
import { type ApiKeyInfo, hashKey, type Scope } from './api-keys.ts'
import { recordAudit, type StateDb } from './state-db.ts'

/** How long a dashboard sign-in lasts: a working day, then the key is asked for again. */
export const SESSION_TTL_MS = 12 * 60 * 60 * 1000

/** A signed-in dashboard: the key it acts as, and when it ends. */
export interface DashboardSession {
  key: ApiKeyInfo
  expires_at: string
}

interface SessionRow {
  expires_at: string
  id: string
  name: string
  scopes: string
  created_at: string
  revoked_at: string | null
  last_used_at: string | null
}

/**
 * Dashboard sessions in SQLite. The browser holds a random 256-bit token in an httpOnly cookie; only its
 * SHA-256 is stored (like API keys). A session is valid while it has not expired and its key is not revoked,
 * which is checked on every request, so revoking a key signs out every browser that used it.
 */
export class SessionStore {
  readonly #db: StateDb
  readonly #lookup: Statement<[string, string]>

  constructor(db: StateDb) {
    this.#db = db
    this.#lookup = db.prepare(
      `SELECT s.expires_at, k.id, k.name, k.scopes, k.created_at, k.revoked_at, k.last_used_at
       FROM dashboard_sessions s JOIN api_keys k ON k.id = s.key_id
       WHERE s.token_hash = ? AND s.expires_at > ? AND k.revoked_at IS NULL`,
    )
  }

  /** Opens a session for a key that was just verified; returns the token for the cookie (never stored). */
  open(key: ApiKeyInfo, now = Date.now()): { token: string; expires_at: string } {
    const token = randomBytes(32).toString('base64url')
    const expires_at = new Date(now + SESSION_TTL_MS).toISOString()
    this.#db.transaction(() => {
      // Expired rows are useless; clearing them here keeps the table at the number of live sign-ins.
      this.#db.prepare('DELETE FROM dashboard_sessions WHERE expires_at <= ?').run(new Date(now).toISOString())
      this.#db
        .prepare('INSERT INTO dashboard_sessions (token_hash, key_id, created_at, expires_at) VALUES (?, ?, ?, ?)')
        .run(hashKey(token), key.id, new Date(now).toISOString(), expires_at)
      recordAudit(this.#db, { actor: key.id, action: 'session.open' })
    })()
    return { token, expires_at }
  }

  /** The live session with this token, or undefined when it is unknown, expired, or its key was revoked. */
  verify(token: string, now = Date.now()): DashboardSession | undefined {
    const row = this.#lookup.get(hashKey(token), new Date(now).toISOString()) as SessionRow | undefined
    if (!row) return undefined
    const { expires_at, scopes, ...key } = row
    return { key: { ...key, scopes: scopes.split(',') as Scope[] }, expires_at }
  }

  /** Ends a session (sign-out); unknown tokens are ignored. */
  close(token: string): void {
    this.#db.transaction(() => {
      const row = this.#db.prepare('DELETE FROM dashboard_sessions WHERE token_hash = ? RETURNING key_id').get(hashKey(token)) as { key_id: string } | undefined
      if (row) recordAudit(this.#db, { actor: row.key_id, action: 'session.close' })
    })()
  }
}
