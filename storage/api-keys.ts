import { createHash, randomBytes } from 'node:crypto'
import type { Statement } from 'better-sqlite3'
import { recordAudit, type StateDb } from './state-db.ts'

export const SCOPES = ['ingest', 'read', 'admin'] as const
export type Scope = (typeof SCOPES)[number]

/** What the API knows about a key; the secret itself is never stored, only its SHA-256. */
export interface ApiKeyInfo {
  id: string
  name: string
  scopes: Scope[]
  created_at: string
  revoked_at: string | null
  last_used_at: string | null
}

interface KeyRow extends Omit<ApiKeyInfo, 'scopes'> {
  scopes: string
}

const toInfo = (row: KeyRow): ApiKeyInfo => ({ ...row, scopes: row.scopes.split(',') as Scope[] })

/** Keys are 256-bit random secrets, so a plain SHA-256 is enough to store them (no password stretching needed). */
export function hashKey(secret: string): string {
  return createHash('sha256').update(secret).digest('hex')
}

/** `admin` implies every scope. */
export function hasScope(key: Pick<ApiKeyInfo, 'scopes'>, scope: Scope): boolean {
  return key.scopes.includes('admin') || key.scopes.includes(scope)
}

export class ApiKeyStore {
  readonly #db: StateDb
  readonly #byHash: Statement<[string]>
  readonly #touch: Statement<[string, string]>
  readonly #dataVersion: Statement<[], number>
  /** Live keys by secret, valid while no other connection has written the database (PRAGMA data_version). */
  readonly #verified = new Map<string, ApiKeyInfo>()
  #verifiedAt = -1
  #versionCheckedAt = 0

  constructor(db: StateDb) {
    this.#db = db
    this.#byHash = db.prepare('SELECT * FROM api_keys WHERE key_hash = ?')
    this.#touch = db.prepare('UPDATE api_keys SET last_used_at = ? WHERE id = ?')
    this.#dataVersion = db.prepare<[], number>('PRAGMA data_version').pluck()
  }

  /** Creates a key and returns its secret: the only time the secret is ever shown. */
  create(opts: { name: string; scopes: Scope[]; secret?: string; actor?: string }): { key: string; info: ApiKeyInfo } {
    const secret = opts.secret ?? `sk_${randomBytes(32).toString('base64url')}`
    const info: ApiKeyInfo = {
      id: `key_${randomBytes(6).toString('hex')}`,
      name: opts.name,
      scopes: [...new Set(opts.scopes)],
      created_at: new Date().toISOString(),
      revoked_at: null,
      last_used_at: null,
    }
    this.#db.transaction(() => {
      this.#db
        .prepare('INSERT INTO api_keys (id, name, key_hash, scopes, created_at) VALUES (?, ?, ?, ?, ?)')
        .run(info.id, info.name, hashKey(secret), info.scopes.join(','), info.created_at)
      this.#verified.clear()
      recordAudit(this.#db, { actor: opts.actor ?? 'cli', action: 'key.create', target: info.id, detail: { name: info.name, scopes: info.scopes } })
    })()
    return { key: secret, info }
  }

  /**
   * The live (not revoked) key with this secret, or undefined. Called on every request, where a SQLite query
   * is a measurable share of the cost, so a verified key is remembered until the database changes; whether it
   * changed is asked at most every 100 ms, so a revocation by any process takes effect within that.
   */
  verify(secret: string, now = Date.now()): ApiKeyInfo | undefined {
    if (now - this.#versionCheckedAt >= 100) {
      this.#versionCheckedAt = now
      const version = this.#dataVersion.get() as number
      if (version !== this.#verifiedAt || this.#verified.size > 10_000) {
        this.#verified.clear()
        this.#verifiedAt = version
      }
    }
    const known = this.#verified.get(secret)
    if (known) return known
    const row = this.#byHash.get(hashKey(secret)) as KeyRow | undefined
    if (!row || row.revoked_at) return undefined
    const info = toInfo(row)
    this.#verified.set(secret, info)
    return info
  }

  /** Notes when a key was last used, at most once a minute per key, so it costs nothing per request. */
  touch(info: ApiKeyInfo, now = Date.now()): void {
    if (info.last_used_at && now - Date.parse(info.last_used_at) < 60_000) return
    info.last_used_at = new Date(now).toISOString()
    this.#touch.run(info.last_used_at, info.id)
  }

  list(): ApiKeyInfo[] {
    return (this.#db.prepare('SELECT * FROM api_keys ORDER BY created_at').all() as KeyRow[]).map(toInfo)
  }

  /** Revokes a key; false when there is no such key. */
  revoke(id: string, actor = 'cli'): boolean {
    return this.#db.transaction(() => {
      const res = this.#db.prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(new Date().toISOString(), id)
      this.#verified.clear()
      if (res.changes > 0) recordAudit(this.#db, { actor, action: 'key.revoke', target: id })
      return res.changes > 0
    })()
  }

  /** True once any key exists: the admin key is created only on a first start. */
  any(): boolean {
    return this.#db.prepare('SELECT 1 FROM api_keys LIMIT 1').get() !== undefined
  }
}
