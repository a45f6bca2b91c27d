import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type { Test } from 'tap'

export const SLUICE_BIN = fileURLToPath(new URL('../../bin/sluice.js', import.meta.url))

export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** Runs `sluice ARGS` to completion, as a user would from the checkout. */
export async function runCli(args: string[], env: Record<string, string>): Promise<{ stdout: string; stderr: string }> {
  return promisify(execFile)(process.execPath, [SLUICE_BIN, ...args], { env: { ...process.env, ...env } })
}

export interface ServeProcess {
  readonly child: ChildProcess
  readonly url: string
  /** Everything written to stdout so far. */
  readonly output: () => string
  /** SIGTERM (or the given signal) and wait for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>
}

/** Starts `sluice serve` as a child process and waits until it says it is running. */
export async function startServe(t: Test, env: Record<string, string>, args: string[] = []): Promise<ServeProcess> {
  const port = env.SLUICE_HTTP_PORT ?? String(await freePort())
  const child = spawn(process.execPath, [SLUICE_BIN, 'serve', ...args], {
    env: { ...process.env, SLUICE_LOG_LEVEL: 'info', ...env, SLUICE_HTTP_PORT: port },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  let err = ''
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (out += d))
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (err += d))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    return exited
  }
  t.teardown(() => stop('SIGKILL'))
  const deadline = Date.now() + 30_000
  while (!out.includes('"sluice is running"')) {
    if (child.exitCode !== null) throw new Error(`sluice serve exited with ${child.exitCode}:\n${out}\n${err}`)
    if (Date.now() > deadline) throw new Error(`sluice serve did not start within 30s:\n${out}\n${err}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  return { child, url: `http://127.0.0.1:${port}`, output: () => out, stop }
}
