import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { text } from 'node:stream/consumers'
import type { Command } from 'commander'
import {
  addSftpUser,
  createUploadLink,
  filesLayout,
  MIN_SFTP_PASSWORD_LENGTH,
  parseAuthorizedKeys,
  SFTP_USER_NAME_RULE,
  sftpUserView,
  uploadLinkUrl,
} from '../pipeline/files/index.ts'
import { DEFAULT_SCHEMAS_DIR, isSluiceError, loadConfig, type SluiceConfig } from '../pipeline/index.ts'
import { linkState, openStateDb, SchemaRegistry, SFTP_USER_NAME, SftpUserStore, type StateDb, UploadLinkStore } from '../storage/index.ts'

/** Reads a line from the terminal without echoing it. */
function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin
  process.stderr.write(question)
  stdin.setRawMode(true)
  stdin.setEncoding('utf8')
  stdin.resume()
  let value = ''
  return new Promise((resolve, reject) => {
    const done = (result: () => void) => {
      stdin.off('data', onData)
      stdin.setRawMode(false)
      stdin.pause()
      process.stderr.write('\n')
      result()
    }
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return done(() => resolve(value))
        if (ch === '\u0003') return done(() => reject(new Error('cancelled')))
        value = ch === '\u007f' || ch === '\b' ? value.slice(0, -1) : value + ch
      }
    }
    stdin.on('data', onData)
  })
}

/** The password from stdin (one line; for scripts), or typed twice at a terminal. */
async function readPassword(cmd: Command, fromStdin: boolean): Promise<string> {
  let password: string
  if (fromStdin || !process.stdin.isTTY) password = (await text(process.stdin)).replace(/\r?\n$/, '')
  else {
    password = await promptHidden('Password: ')
    if ((await promptHidden('Again: ')) !== password) return cmd.error('the passwords differ')
  }
  if (password.length < MIN_SFTP_PASSWORD_LENGTH) return cmd.error(`a password needs at least ${MIN_SFTP_PASSWORD_LENGTH} characters`)
  return password
}

/** `sluice sftp ...` and `sluice links ...`: SFTP users and upload links, on the data dir directly (like `keys`). */
export function registerFilesCommands(program: Command): void {
  const config = (): SluiceConfig => loadConfig({ file: program.opts().config })
  const stateDb = (c: SluiceConfig): StateDb => openStateDb(join(c.dataDir, 'state.db'))
  const schemaRegistry = (db: StateDb): SchemaRegistry => {
    const registry = new SchemaRegistry(db)
    registry.loadDefaults(DEFAULT_SCHEMAS_DIR)
    return registry
  }

  const sftp = program.command('sftp').description('SFTP users (works on the data dir directly; the server is the files role)')
  sftp
    .command('add-user <name>')
    .description('add a user who logs in by password, public key, or both; jailed in its own folder')
    .option('--password', 'set a password: typed at the terminal, or one line on stdin')
    .option('--password-stdin', 'set a password read from stdin (for scripts)')
    .option('--key <file>', 'authorized public keys (an OpenSSH .pub or authorized_keys file)')
    .action(async function (this: Command, name: string, opts: { password?: boolean; passwordStdin?: boolean; key?: string }) {
      // Checked before a password is typed; addSftpUser checks everything again.
      if (!SFTP_USER_NAME.test(name)) return this.error(SFTP_USER_NAME_RULE)
      if (!opts.password && !opts.passwordStdin && !opts.key) return this.error('give --password, --password-stdin or --key FILE (or both)')
      let publicKeys: string[] = []
      if (opts.key) {
        try {
          publicKeys = parseAuthorizedKeys(readFileSync(opts.key, 'utf8'))
        } catch (err) {
          return this.error(`${opts.key}: ${(err as Error).message}`)
        }
        if (publicKeys.length === 0) return this.error(`${opts.key} holds no public key`)
      }
      const password = opts.password || opts.passwordStdin ? await readPassword(this, Boolean(opts.passwordStdin)) : undefined
      const c = config()
      const db = stateDb(c)
      try {
        addSftpUser(new SftpUserStore(db), schemaRegistry(db), c.dataDir, { name, password, publicKeys, actor: 'cli' })
      } catch (err) {
        if (!isSluiceError(err)) throw err
        return this.error(
          err.code === 'SLUICE_SFTP_USER_EXISTS' ? `user ${name} exists; \`sluice sftp remove ${name}\` first to change how it logs in` : err.message,
        )
      }
      const folder = join(filesLayout(c.dataDir).usersDir, name)
      const how = [password !== undefined && 'password', publicKeys.length && `${publicKeys.length} key${publicKeys.length > 1 ? 's' : ''}`].filter(Boolean)
      console.log(`added sftp user ${name} (${how.join(', ')}); folder ${folder}`)
    })
  sftp
    .command('list')
    .option('--json', 'machine-readable output')
    .action((opts: { json?: boolean }) => {
      const users = new SftpUserStore(stateDb(config())).list().map((u) => {
        const { username, public_keys, ...view } = sftpUserView(u)
        return { name: username, ...view, keys: public_keys.length }
      })
      if (opts.json) return console.log(JSON.stringify(users))
      for (const u of users)
        console.log(`${u.name.padEnd(20)} ${u.password ? 'password' : '        '} ${String(u.keys).padStart(2)} key(s)  since ${u.created_at}`)
    })
  sftp
    .command('remove <name>')
    .description('remove the login; the folder and its files stay')
    .action(function (this: Command, name: string) {
      const c = config()
      if (!new SftpUserStore(stateDb(c)).remove(name)) return this.error(`no sftp user ${name}`)
      console.log(`removed sftp user ${name}; the folder ${join(filesLayout(c.dataDir).usersDir, name)} was kept`)
    })

  const links = program.command('links').description('upload links (works on the data dir directly)')
  links
    .command('create')
    .description('create a link that uploads files of one object without an API key; prints its URL (shown only once)')
    .requiredOption('--object <name>', 'the object the uploaded files hold')
    .option('--expires <duration>', 'lifetime: 30m, 24h, 7d (at most 90d)', '24h')
    .option('--max-uploads <n>', 'uploads the link takes (default: any number until it expires)')
    .option('--json', 'machine-readable output')
    .action(function (this: Command, opts: { object: string; expires: string; maxUploads?: string; json?: boolean }) {
      const maxUploads = opts.maxUploads === undefined ? undefined : Number(opts.maxUploads)
      if (maxUploads !== undefined && !(Number.isInteger(maxUploads) && maxUploads >= 1)) return this.error('--max-uploads must be a whole number from 1')
      const c = config()
      const db = stateDb(c)
      try {
        const { token, link } = createUploadLink(new UploadLinkStore(db), schemaRegistry(db), {
          object: opts.object,
          expires: opts.expires,
          maxUploads,
          actor: 'cli',
        })
        const url = uploadLinkUrl(c.files.publicUrl ?? `http://${c.http.host}:${c.http.port}`, token)
        if (opts.json) return console.log(JSON.stringify({ ...link, token, url }))
        console.log(`${link.id}  ${link.object}  expires ${link.expires_at}${link.max_uploads ? `  ${link.max_uploads} upload(s)` : ''}\n${url}`)
      } catch (err) {
        if (isSluiceError(err)) return this.error(err.message)
        throw err
      }
    })
  links
    .command('list')
    .option('--json', 'machine-readable output')
    .action((opts: { json?: boolean }) => {
      const list = new UploadLinkStore(stateDb(config())).list().map((l) => ({ ...l, state: linkState(l) }))
      if (opts.json) return console.log(JSON.stringify(list))
      for (const l of list)
        console.log(`${l.id}  ${l.object.padEnd(12)} ${l.state.padEnd(8)} expires ${l.expires_at}  ${l.uploads}/${l.max_uploads ?? '∞'} uploads`)
    })
  links.command('revoke <id>').action(function (this: Command, id: string) {
    if (!new UploadLinkStore(stateDb(config())).revoke(id, 'cli')) return this.error(`no active upload link ${id}`)
    console.log(`revoked ${id}`)
  })
}
