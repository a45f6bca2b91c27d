import { randomBytes, scrypt, scryptSync, timingSafeEqual } from 'node:crypto'
import { recordAudit, type StateDb } from './state-db.ts'

/** Names double as folder names, so they are kept to a safe alphabet. */
export const SFTP_USER_NAME = /^[a-z][a-z0-9_-]{0,31}$/

/** What Sluice keeps about an SFTP user: never the password, only its scrypt hash. */
export interface SftpUser {
  name: string
  /** scrypt$N$r$p$salt$hash, or null for a key-only user. */
  password_hash: string | null
  /** authorized_keys lines, one key each. */
  public_keys: string[]
  created_at: string
}

interface SftpUserRow extends Omit<SftpUser, 'public_keys'> {
  public_keys: string
}

const toUser = (row: SftpUserRow): SftpUser => ({ ...row, public_keys: row.public_keys.split('\n').filter(Boolean) })

// N=2^15 (32 MiB, some 50 ms a check): dear for someone guessing offline, cheap for a server that also slows failed logins.
const SCRYPT = { N: 1 << 15, r: 8, p: 1, keylen: 32 }
const scryptOptions = (N: number, r: number, p: number) => ({ N, r, p, maxmem: 256 * N * r })

function hashPassword(password: string): string {
  const salt = randomBytes(16)
  const hash = scryptSync(password, salt, SCRYPT.keylen, scryptOptions(SCRYPT.N, SCRYPT.r, SCRYPT.p))
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64url'), hash.toString('base64url')].join('$')
}

/** Checks a password against a stored hash without blocking the event loop; false for any malformed hash. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [kind, N, r, p, salt, hash] = stored.split('$')
  if (kind !== 'scrypt' || !hash) return false
  const expected = Buffer.from(hash, 'base64url')
  const actual = await new Promise<Buffer>((resolve, reject) =>
    scrypt(password, Buffer.from(salt, 'base64url'), expected.length, scryptOptions(Number(N), Number(r), Number(p)), (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  )
  return timingSafeEqual(actual, expected)
}

/** SFTP users, in SQLite; the CLI adds and removes them, the SFTP server reads them at each login. */
export class SftpUserStore {
  readonly #db: StateDb

  constructor(db: StateDb) {
    this.#db = db
  }

  /** Adds a user; false when the name is taken. The caller has checked the name and the keys. */
  add(user: { name: string; password?: string; publicKeys: string[] }, actor = 'cli'): boolean {
    return this.#db.transaction(() => {
      const res = this.#db
        .prepare('INSERT OR IGNORE INTO sftp_users (name, password_hash, public_keys, created_at) VALUES (?, ?, ?, ?)')
        .run(user.name, user.password === undefined ? null : hashPassword(user.password), user.publicKeys.join('\n'), new Date().toISOString())
      if (res.changes > 0)
        recordAudit(this.#db, {
          actor,
          action: 'sftp.user_add',
          target: user.name,
          detail: { password: user.password !== undefined, keys: user.publicKeys.length },
        })
      return res.changes > 0
    })()
  }

  get(name: string): SftpUser | undefined {
    const row = this.#db.prepare('SELECT * FROM sftp_users WHERE name = ?').get(name) as SftpUserRow | undefined
    return row && toUser(row)
  }

  list(): SftpUser[] {
    return (this.#db.prepare('SELECT * FROM sftp_users ORDER BY name').all() as SftpUserRow[]).map(toUser)
  }

  /** Removes the login (the user's folder stays); false when there is no such user. */
  remove(name: string, actor = 'cli'): boolean {
    return this.#db.transaction(() => {
      const res = this.#db.prepare('DELETE FROM sftp_users WHERE name = ?').run(name)
      if (res.changes > 0) recordAudit(this.#db, { actor, action: 'sftp.user_remove', target: name })
      return res.changes > 0
    })()
  }

  /** Audits a login attempt, accepted or refused, with where it came from. */
  recordLogin(name: string, ok: boolean, detail: { ip: string; method: string; reason?: string }): void {
    recordAudit(this.#db, { actor: `sftp:${name}`, action: ok ? 'sftp.login' : 'sftp.login_failed', target: name, detail })
  }

  /** Audits a completed upload. */
  recordUpload(name: string, detail: { path: string; bytes: number; ip: string }): void {
    recordAudit(this.#db, { actor: `sftp:${name}`, action: 'sftp.upload', target: detail.path, detail })
  }
}
