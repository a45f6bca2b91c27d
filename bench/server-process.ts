import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'

/** The checkout's root: children run from it so that `--import tsx` and relative paths resolve. */
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url))

/** Keeps this much of a child's output, for the error message when it fails. */
const OUTPUT_TAIL_CHARS = 20_000
/** How long SIGTERM may take before the whole process group is killed. */
const STOP_GRACE_MS = 15_000
const DEFAULT_START_TIMEOUT_MS = 30_000

/** A server the bench started in a child process. */
export interface ServerProcess {
  /** The child's process id (also its process group's). */
  readonly pid: number
  /** The tail of what it wrote to stdout and stderr. */
  output(): string
  /** SIGTERM, wait for exit (SIGKILL of its process group after a grace period); the exit code. */
  stop(): Promise<number | null>
}

/** Every server started and not yet stopped, with the function that stops it. */
const running = new Map<ChildProcess, () => Promise<number | null>>()

/** Kills `child` and whatever it spawned (Sluice spawns nats-server): they share its process group. */
function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-(child.pid as number), signal)
  } catch {
    // ESRCH: nothing left in the group.
  }
}

// Last resort when the bench exits without stopping its children (an uncaught error, process.exit()).
process.on('exit', () => {
  for (const child of running.keys()) killGroup(child, 'SIGKILL')
})

/** A TCP port free on loopback right now. */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

/**
 * Runs `node ARGS` from the repo root and waits until `url` answers any HTTP request.
 * Fails with the child's output if it exits first or does not answer within `startTimeoutMs`.
 */
export async function startServerProcess(opts: {
  name: string
  args: string[]
  env: NodeJS.ProcessEnv
  url: string
  /** Default 30 s. */
  startTimeoutMs?: number
}): Promise<ServerProcess> {
  // detached: its own process group, so stopping it also ends its children, and a Ctrl-C in the terminal
  // reaches only the bench, which then stops it in order.
  const child = spawn(process.execPath, opts.args, { cwd: REPO_ROOT, env: opts.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let output = ''
  const keep = (chunk: string) => (output = (output + chunk).slice(-OUTPUT_TAIL_CHARS))
  child.stdout?.setEncoding('utf8').on('data', keep)
  child.stderr?.setEncoding('utf8').on('data', keep)
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const hasExited = () => child.exitCode !== null || child.signalCode !== null

  const stop = async () => {
    if (!hasExited()) child.kill('SIGTERM')
    // Unreferenced: a pending grace timer must not keep the bench alive once the child has exited.
    const grace = sleep(STOP_GRACE_MS, 'timeout' as const, { ref: false })
    if ((await Promise.race([exited, grace])) === 'timeout') killGroup(child, 'SIGKILL')
    const code = await exited
    // A child that exits on SIGTERM may still leave its own children behind.
    killGroup(child, 'SIGKILL')
    running.delete(child)
    return code
  }
  running.set(child, stop)

  const startTimeoutMs = opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS
  const deadline = Date.now() + startTimeoutMs
  for (;;) {
    if (hasExited()) {
      await stop()
      throw new Error(`${opts.name} exited with ${child.exitCode ?? child.signalCode} before it answered on ${opts.url}:\n${output}`)
    }
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`${opts.name} did not answer on ${opts.url} within ${startTimeoutMs} ms:\n${output}`)
    }
    const answered = await fetch(opts.url, { signal: AbortSignal.timeout(1000) }).then(
      () => true,
      () => false,
    )
    if (answered) break
    await sleep(100)
  }
  return { pid: child.pid as number, output: () => output, stop }
}

/** Stops every server still running (after an error or on a signal). */
export async function stopAllServerProcesses(): Promise<void> {
  await Promise.all([...running.values()].map((stop) => stop()))
}

/** A running `sluice serve` as a bench measures it. */
export interface BenchSluice {
  url: string
  pid: number
  dataDir: string
  /** Authorization with the admin key. */
  headers: Record<string, string>
}

/**
 * Runs `measure` against `sluice serve` (its default roles, or `roles`) on a fresh data dir and a free port, with the bench's own settings only
 * (an inherited NATS_URL or SLUICE_CONFIG would measure some other setup), then stops it and removes the data
 * dir, also when a Ctrl-C ends the bench midway. A non-zero exit on SIGTERM comes back as a problem.
 */
export async function withSluiceServe<T>(
  adminKey: string,
  measure: (sluice: BenchSluice) => Promise<T>,
  opts: { roles?: readonly string[] } = {},
): Promise<{ result: T; problems: string[] }> {
  const port = await freePort()
  const dataDir = mkdtempSync(join(tmpdir(), 'sluice-bench-'))
  const removeDataDir = () => rmSync(dataDir, { recursive: true, force: true })
  process.once('exit', removeDataDir)
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => name !== 'NATS_URL' && !name.startsWith('SLUICE_')))
  try {
    const server = await startServerProcess({
      name: 'sluice serve',
      args: ['bin/sluice.js', 'serve', ...(opts.roles ? ['--roles', opts.roles.join(',')] : [])],
      env: { ...env, SLUICE_DATA_DIR: dataDir, SLUICE_HTTP_PORT: String(port), SLUICE_ADMIN_KEY: adminKey, SLUICE_LOG_LEVEL: 'warn' },
      // Sluice starts ingress after NATS and the other roles, so an answer on its port means all of it is up.
      url: `http://127.0.0.1:${port}/healthz`,
    })
    let result: T
    try {
      result = await measure({ url: `http://127.0.0.1:${port}`, pid: server.pid, dataDir, headers: { authorization: `Bearer ${adminKey}` } })
    } catch (err) {
      await server.stop()
      throw err
    }
    const exitCode = await server.stop()
    return { result, problems: exitCode === 0 ? [] : [`sluice serve exited with ${exitCode} on SIGTERM:\n${server.output()}`] }
  } finally {
    process.off('exit', removeDataDir)
    removeDataDir()
  }
}
