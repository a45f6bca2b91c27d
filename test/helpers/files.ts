import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { openStateDb } from '../../storage/index.ts'
import { SLUICE_BIN } from './cli.ts'

export interface Finished {
  code: number | null
  stdout: string
  stderr: string
  ms: number
}

/** Runs a program to its end, feeding `input` on stdin; never blocks the event loop (Sluice may run in this process). */
export function run(command: string, args: string[], opts: { input?: string; env?: Record<string, string> } = {}): Promise<Finished> {
  const started = Date.now()
  const child = spawn(command, args, { env: { ...process.env, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  child.stdin.end(opts.input ?? '')
  return new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('close', (code) => resolve({ code, stdout, stderr, ms: Date.now() - started }))
  })
}

/** The audit log's entries of one action, oldest first. */
export const auditOf = (dataDir: string, action: string) =>
  openStateDb(join(dataDir, 'state.db')).prepare('SELECT actor, target, detail_json FROM audit_log WHERE action = ? ORDER BY id').all(action) as {
    actor: string
    target: string
    detail_json: string
  }[]

/** `sluice ARGS` with stdin. */
export const sluice = (args: string[], env: Record<string, string>, input?: string) => run(process.execPath, [SLUICE_BIN, ...args], { env, input })

/** How the OpenSSH client logs in: a key file, or a password typed by sshpass. */
export type SftpLogin = { user: string; key: string } | { user: string; password: string }

/**
 * Runs OpenSSH's `sftp -b` with these commands (a leading `-` lets a command fail without ending the batch).
 * The host key is not pinned: every test server makes a new one.
 */
export function sftpBatch(port: number, login: SftpLogin, commands: string[], workDir: string): Promise<Finished> {
  const batch = join(workDir, `batch-${process.hrtime.bigint()}`)
  writeFileSync(batch, `${commands.join('\n')}\n`)
  const common = ['-P', String(port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR']
  if ('key' in login)
    return run('sftp', [
      ...common,
      '-i',
      login.key,
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'PreferredAuthentications=publickey',
      '-b',
      batch,
      `${login.user}@127.0.0.1`,
    ])
  // -b turns BatchMode on, which forbids password prompts; an earlier -o wins in ssh, so it is turned off first.
  return run('sshpass', [
    '-p',
    login.password,
    'sftp',
    '-o',
    'BatchMode=no',
    ...common,
    '-o',
    'PubkeyAuthentication=no',
    '-o',
    'PreferredAuthentications=password',
    '-o',
    'NumberOfPasswordPrompts=1',
    '-b',
    batch,
    `${login.user}@127.0.0.1`,
  ])
}
