import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import ssh2, { type AuthContext, type Connection, type ParsedKey, type Server as SshServer } from 'ssh2'
import { SFTP_USER_NAME, type SftpUser, type SftpUserStore, verifyPassword } from '../../storage/index.ts'
import type { Logger } from '../logger.ts'
import { Jail } from './jail.ts'
import { serveSftp } from './sftp-session.ts'

// ssh2 is CommonJS: its named exports are not visible to an ES module import.
const { Server, utils } = ssh2

/** The server's host key (OpenSSH format), made on the first start and kept: clients pin it. */
function loadHostKey(path: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  mkdirSync(dirname(path), { recursive: true })
  const key = utils.generateKeyPairSync('ed25519').private
  writeFileSync(path, key, { mode: 0o600, flag: 'wx' })
  return key
}

/** `SHA256:...` as `ssh-keygen -lf` and OpenSSH's first-connection prompt show it. */
function fingerprintOf(privateKey: string): string {
  const key = utils.parseKey(privateKey) as ParsedKey
  return `SHA256:${createHash('sha256').update(key.getPublicSSH()).digest('base64').replace(/=+$/, '')}`
}

/** Whether one line is an OpenSSH public key (`ssh-ed25519 AAAA... comment`), as authorized_keys holds them. */
export function isPublicKeyLine(line: string): boolean {
  if (/[\r\n]/.test(line)) return false
  const key = utils.parseKey(line)
  return !(key instanceof Error) && !key.isPrivateKey()
}

/** The keys of an authorized_keys text, one a line; throws naming the first line that is not a public key. */
export function parseAuthorizedKeys(text: string): string[] {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
  for (const [i, line] of lines.entries()) if (!isPublicKeyLine(line)) throw new Error(`line ${i + 1} is not an OpenSSH public key`)
  return lines
}

function matchingKey(user: SftpUser, offered: { algo: string; data: Buffer }): ParsedKey | undefined {
  for (const line of user.public_keys) {
    const key = utils.parseKey(line)
    if (!(key instanceof Error) && key.type === offered.algo && key.getPublicSSH().equals(offered.data)) return key
  }
  return undefined
}

export interface SftpServerOptions {
  host: string
  port: number
  hostKeyPath: string
  /** Each user's jail is `<usersDir>/<name>`. */
  usersDir: string
  users: SftpUserStore
  maxFileBytes: number
  /** First delay after a failed login; doubled per further failure from the address, at most MAX_FAILURE_DELAY_MS. */
  failureDelayMs: number
  log: Logger
}

const MAX_FAILURE_DELAY_MS = 30_000
/** An address's failures are forgotten after this long without a new one. */
const FAILURE_MEMORY_MS = 15 * 60_000
/** Refused attempts (password or key signature) one connection may make before it is closed. */
const MAX_FAILURES_PER_CONNECTION = 3

/** What one connection has tried: a refused key is audited only if no login follows. */
interface LoginAttempt {
  ip: string
  /** Set once logged in (before ssh2 emits 'ready', which it does from within accept()). */
  user?: string
  failures: number
  refusedKeyFor?: string
  hangUp: () => void
}

/**
 * The SFTP server (ssh2): password (scrypt hash) or public-key logins of the users on file, each jailed in its
 * own folder, SFTP only (no shell, exec or forwarding). Failed logins are audited and answered ever more slowly.
 */
export class SftpServer {
  readonly #opts: SftpServerOptions
  readonly #connections = new Set<Connection>()
  readonly #failures = new Map<string, { count: number; at: number }>()
  #server?: SshServer

  constructor(opts: SftpServerOptions) {
    this.#opts = opts
  }

  /** Listens; resolves with the port (useful with port 0). */
  async start(): Promise<number> {
    const hostKey = loadHostKey(this.#opts.hostKeyPath)
    const server = new Server({ hostKeys: [hostKey], ident: 'Sluice' }, (client, info) => this.#accept(client, info.ip))
    this.#server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.#opts.port, this.#opts.host, () => resolve())
    })
    const { port } = server.address() as { port: number }
    this.#opts.log.info({ host: this.#opts.host, port, fingerprint: fingerprintOf(hostKey) }, 'sftp server listening')
    return port
  }

  async stop(): Promise<void> {
    const server = this.#server
    if (!server) return
    for (const client of this.#connections) client.end()
    await new Promise((resolve) => server.close(resolve))
  }

  #accept(client: Connection, ip: string): void {
    this.#connections.add(client)
    const attempt: LoginAttempt = { ip, failures: 0, hangUp: () => client.end() }
    client.on('authentication', (ctx) => {
      this.#authenticate(ctx, attempt).catch((err) => {
        this.#opts.log.error({ err }, 'sftp authentication failed with an error')
        ctx.reject()
      })
    })
    client.on('ready', () => {
      const name = attempt.user as string
      client.on('session', (acceptSession) => {
        const session = acceptSession()
        session.on('sftp', (acceptSftp) => {
          const jail = this.#jailOf(name)
          serveSftp(acceptSftp(), {
            jail,
            maxFileBytes: this.#opts.maxFileBytes,
            log: this.#opts.log.child({ sftp_user: name }),
            onUpload: (upload) => this.#opts.users.recordUpload(name, { path: upload.virtual, bytes: upload.bytes, ip }),
          })
        })
      })
    })
    client.on('error', (err) => this.#opts.log.debug({ err, ip }, 'sftp connection error'))
    client.on('close', () => {
      this.#connections.delete(client)
      if (!attempt.user && attempt.refusedKeyFor)
        this.#opts.users.recordLogin(attempt.refusedKeyFor, false, { ip, method: 'publickey', reason: 'key not on file' })
    })
  }

  #jailOf(name: string): Jail {
    const dir = join(this.#opts.usersDir, name)
    mkdirSync(dir, { recursive: true })
    return new Jail(realpathSync(dir))
  }

  /** Accepts or rejects one authentication request. */
  async #authenticate(ctx: AuthContext, attempt: LoginAttempt): Promise<void> {
    const name = ctx.username
    const user = SFTP_USER_NAME.test(name) ? this.#opts.users.get(name) : undefined
    if (ctx.method === 'password') {
      if (user?.password_hash && (await verifyPassword(ctx.password, user.password_hash))) return this.#loggedIn(ctx, attempt)
      return this.#refuse(ctx, attempt, user ? 'wrong password' : 'no such user')
    }
    if (ctx.method === 'publickey') {
      const key = user && matchingKey(user, ctx.key)
      if (!key) {
        // Clients offer each key they have in turn: one not on file is no failure yet, only if nothing else works.
        attempt.refusedKeyFor = name
        return ctx.reject()
      }
      // Without a signature the client only asks whether this key would do.
      if (!ctx.signature) return ctx.accept()
      if (key.verify(ctx.blob as Buffer, ctx.signature, ctx.hashAlgo) === true) return this.#loggedIn(ctx, attempt)
      return this.#refuse(ctx, attempt, 'bad key signature')
    }
    ctx.reject(['publickey', 'password'])
  }

  #loggedIn(ctx: AuthContext, attempt: LoginAttempt): void {
    attempt.user = ctx.username
    this.#failures.delete(attempt.ip)
    this.#opts.users.recordLogin(ctx.username, true, { ip: attempt.ip, method: ctx.method })
    this.#opts.log.info({ user: ctx.username, ip: attempt.ip, method: ctx.method }, 'sftp login')
    ctx.accept()
  }

  /** Audits the failure, waits (longer with each failure from the address), then rejects. */
  async #refuse(ctx: AuthContext, attempt: LoginAttempt, reason: string): Promise<void> {
    const now = Date.now()
    for (const [ip, f] of this.#failures) if (now - f.at > FAILURE_MEMORY_MS) this.#failures.delete(ip)
    const failures = (this.#failures.get(attempt.ip)?.count ?? 0) + 1
    this.#failures.set(attempt.ip, { count: failures, at: now })
    attempt.failures++
    this.#opts.users.recordLogin(ctx.username, false, { ip: attempt.ip, method: ctx.method, reason })
    this.#opts.log.warn({ user: ctx.username, ip: attempt.ip, method: ctx.method, reason }, 'sftp login failed')
    await sleep(Math.min(this.#opts.failureDelayMs * 2 ** (failures - 1), MAX_FAILURE_DELAY_MS))
    ctx.reject()
    if (attempt.failures >= MAX_FAILURES_PER_CONNECTION) attempt.hangUp()
  }
}
