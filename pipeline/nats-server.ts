import { type ChildProcess, spawn } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { SluiceError } from './errors.ts'

/** A nats-server child process with JetStream, listening on loopback. */
export interface EmbeddedNatsServer {
  readonly url: string
  readonly port: number
  readonly storeDir: string
  stop(): Promise<void>
}

const LISTEN_LINE = /Listening for client connections on [^\s]+:(\d+)/

/**
 * Spawns `nats-server -js` on 127.0.0.1. `port` 0 lets the server pick a free port (it logs which).
 * Used by `sluice serve` without NATS_URL and by the tests, so both run the same real server.
 */
export async function startNatsServer(opts: {
  storeDir: string
  port?: number
  binary?: string
  /** GOMAXPROCS of the server; unset or 0: Go's default (every core). */
  cpus?: number
  /** GOMEMLIMIT of the server, MiB; unset or 0: none. */
  memoryLimitMb?: number
}): Promise<EmbeddedNatsServer> {
  mkdirSync(opts.storeDir, { recursive: true })
  const args = ['-js', '-a', '127.0.0.1', '-p', String(opts.port ? opts.port : -1), '-sd', opts.storeDir]
  const env = {
    ...process.env,
    ...(opts.cpus ? { GOMAXPROCS: String(opts.cpus) } : {}),
    ...(opts.memoryLimitMb ? { GOMEMLIMIT: `${opts.memoryLimitMb}MiB` } : {}),
  }
  const child = spawn(opts.binary ?? 'nats-server', args, { stdio: ['ignore', 'ignore', 'pipe'], env })
  const port = await new Promise<number>((resolve, reject) => {
    let log = ''
    const timer = setTimeout(() => fail(new Error('nats-server did not start within 10s')), 10_000)
    const fail = (cause: Error) => {
      clearTimeout(timer)
      child.kill('SIGKILL')
      reject(new SluiceError('SLUICE_NATS_SERVER_FAILED', `cannot start nats-server: ${cause.message}\n${log}`, { cause }))
    }
    child.once('error', (err) => fail(err))
    child.once('exit', (code) => fail(new Error(`nats-server exited with code ${code}`)))
    child.stderr?.setEncoding('utf8')
    child.stderr?.on('data', (chunk: string) => {
      log += chunk
      const m = LISTEN_LINE.exec(log)
      // "Server is ready" comes after JetStream is up; only then may clients create streams.
      if (m && log.includes('Server is ready')) {
        clearTimeout(timer)
        child.removeAllListeners('exit')
        child.removeAllListeners('error')
        child.stderr?.removeAllListeners('data')
        child.stderr?.resume()
        resolve(Number(m[1]))
      }
    })
  })
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir: opts.storeDir,
    stop: () => stopChild(child),
  }
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    const killer = setTimeout(() => child.kill('SIGKILL'), 5000)
    child.once('exit', () => {
      clearTimeout(killer)
      resolve()
    })
    child.kill('SIGTERM')
  })
}
