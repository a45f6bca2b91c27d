import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { promisify } from 'node:util'

/** Linux reports process CPU time in /proc/<pid>/stat in these ticks (USER_HZ, 100 on every common platform). */
const CLOCK_TICKS_PER_SECOND = 100

/** VmRSS of a process in bytes, or null once it is gone. */
export function rssBytes(pid: number): number | null {
  try {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return match ? Number(match[1]) * 1024 : null
  } catch {
    return null
  }
}

/** User plus system CPU time a process has used, in seconds, or null once it is gone. */
export function cpuSeconds(pid: number): number | null {
  try {
    // The command name, in parentheses, may hold spaces: the fields to count start after its closing one.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND
  } catch {
    return null
  }
}

/** The nats-server Sluice started as its child, if it runs one. */
export async function natsServerPid(sluicePid: number): Promise<number | null> {
  try {
    const { stdout } = await promisify(execFile)('pgrep', ['-P', String(sluicePid), 'nats-server'])
    const pid = Number.parseInt(stdout, 10)
    return Number.isNaN(pid) ? null : pid
  } catch {
    // pgrep exits 1 when nothing matches.
    return null
  }
}
