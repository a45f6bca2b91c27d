import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { recordAudit, type StateDb } from './state-db.ts'

/** An upload link as listed: never its token, which is shown once at creation and stored only as a hash. */
export interface UploadLink {
  id: string
  object: string
  expires_at: string
  /** null: any number of uploads until it expires. */
  max_uploads: number | null
  uploads: number
  created_by: string
  created_at: string
  revoked_at: string | null
}

/** Why a link no longer takes uploads; `active` when it does. */
export type LinkState = 'active' | 'expired' | 'revoked' | 'used_up'

export function linkState(link: UploadLink, now = Date.now()): LinkState {
  if (link.revoked_at) return 'revoked'
  if (Date.parse(link.expires_at) <= now) return 'expired'
  if (link.max_uploads !== null && link.uploads >= link.max_uploads) return 'used_up'
  return 'active'
}

/** `<id>.<expiry, unix seconds>.<HMAC-SHA256 of both, base64url>`: readable, and useless without the server's key. */
const TOKEN = /^(link_[0-9a-f]{16})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})$/

const COLUMNS = 'id, object, expires_at, max_uploads, uploads, created_by, created_at, revoked_at'

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')

/** Upload links: signed, expiring, revocable tokens that let someone without an API key upload files of one object. */
export class UploadLinkStore {
  readonly #db: StateDb
  #secret?: Buffer

  constructor(db: StateDb) {
    this.#db = db
  }

  /** The signing key, made on first use; INSERT OR IGNORE so two processes starting at once agree on one. */
  #key(): Buffer {
    if (!this.#secret) {
      this.#db.prepare('INSERT OR IGNORE INTO upload_link_secret (id, secret) VALUES (1, ?)').run(randomBytes(32).toString('base64url'))
      const { secret } = this.#db.prepare('SELECT secret FROM upload_link_secret WHERE id = 1').get() as { secret: string }
      this.#secret = Buffer.from(secret, 'base64url')
    }
    return this.#secret
  }

  #sign(id: string, expiresUnix: number): string {
    return createHmac('sha256', this.#key()).update(`${id}.${expiresUnix}`).digest('base64url')
  }

  /** Creates a link and returns its token: the only time the token is ever shown. */
  create(opts: { object: string; expiresAt: Date; maxUploads?: number; actor: string }): { token: string; link: UploadLink } {
    const id = `link_${randomBytes(8).toString('hex')}`
    const expiresUnix = Math.floor(opts.expiresAt.getTime() / 1000)
    const token = `${id}.${expiresUnix}.${this.#sign(id, expiresUnix)}`
    const link: UploadLink = {
      id,
      object: opts.object,
      expires_at: new Date(expiresUnix * 1000).toISOString(),
      max_uploads: opts.maxUploads ?? null,
      uploads: 0,
      created_by: opts.actor,
      created_at: new Date().toISOString(),
      revoked_at: null,
    }
    this.#db.transaction(() => {
      this.#db
        .prepare('INSERT INTO upload_links (id, token_hash, object, expires_at, max_uploads, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
        .run(id, sha256(token), link.object, link.expires_at, link.max_uploads, link.created_by, link.created_at)
      recordAudit(this.#db, {
        actor: opts.actor,
        action: 'link.create',
        target: id,
        detail: { object: link.object, expires_at: link.expires_at, max_uploads: link.max_uploads },
      })
    })()
    return { token, link }
  }

  get(id: string): UploadLink | undefined {
    return this.#db.prepare(`SELECT ${COLUMNS} FROM upload_links WHERE id = ?`).get(id) as UploadLink | undefined
  }

  list(): UploadLink[] {
    return this.#db.prepare(`SELECT ${COLUMNS} FROM upload_links ORDER BY created_at DESC`).all() as UploadLink[]
  }

  /**
   * The link a token belongs to, if the token is genuine: well-formed, signed with this server's key, and the
   * very token stored (by hash). Whether the link still takes uploads is linkState's question.
   */
  authenticate(token: string): UploadLink | undefined {
    const parts = TOKEN.exec(token)
    if (!parts) return undefined
    const [, id, expires, signature] = parts
    const expected = Buffer.from(this.#sign(id, Number(expires)), 'base64url')
    if (!timingSafeEqual(Buffer.from(signature, 'base64url'), expected)) return undefined
    const row = this.#db.prepare('SELECT token_hash FROM upload_links WHERE id = ?').get(id) as { token_hash: string } | undefined
    return row?.token_hash === sha256(token) ? this.get(id) : undefined
  }

  /**
   * Takes one of the link's uploads, atomically, so concurrent uploads cannot exceed max_uploads; false when
   * the link no longer takes uploads. releaseUpload gives it back when the upload then fails.
   */
  reserveUpload(id: string, now = Date.now()): boolean {
    return (
      this.#db
        .prepare(
          `UPDATE upload_links SET uploads = uploads + 1
           WHERE id = ? AND revoked_at IS NULL AND expires_at > ? AND (max_uploads IS NULL OR uploads < max_uploads)`,
        )
        .run(id, new Date(now).toISOString()).changes > 0
    )
  }

  releaseUpload(id: string): void {
    this.#db.prepare('UPDATE upload_links SET uploads = uploads - 1 WHERE id = ? AND uploads > 0').run(id)
  }

  /** Revokes a link; false when there is no such link or it was revoked already. */
  revoke(id: string, actor: string): boolean {
    return this.#db.transaction(() => {
      const res = this.#db.prepare('UPDATE upload_links SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(new Date().toISOString(), id)
      if (res.changes > 0) recordAudit(this.#db, { actor, action: 'link.revoke', target: id })
      return res.changes > 0
    })()
  }

  /** Audits a use of a link: an upload it took, or one it refused (expired, revoked, used up). */
  recordUse(link: UploadLink, action: 'link.upload' | 'link.refused', detail: Record<string, unknown>): void {
    recordAudit(this.#db, { actor: `link:${link.id}`, action, target: link.id, detail })
  }
}
