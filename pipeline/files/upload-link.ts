import type { SchemaRegistry, UploadLink, UploadLinkStore } from '../../storage/index.ts'
import { SluiceError } from '../errors.ts'

const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const
/** The longest a link may live: a link is a password handed to someone, so it should not outlive its use. */
const MAX_LINK_LIFETIME_MS = 90 * UNIT_MS.d

/** `30m`, `24h`, `7d` in milliseconds; undefined for anything else. */
function parseDuration(text: string): number | undefined {
  const match = /^([1-9][0-9]{0,5})([mhd])$/.exec(text.trim())
  return match ? Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS] : undefined
}

/** The page a link's holder opens. */
export function uploadLinkUrl(baseUrl: string, token: string): string {
  return `${baseUrl.replace(/\/+$/, '')}/upload/${token}`
}

/** Creates an upload link for an object on file, expiring `expires` (`24h`) from now; the CLI and the API both come here. */
export function createUploadLink(
  links: UploadLinkStore,
  registry: SchemaRegistry,
  opts: { object: string; expires: string; maxUploads?: number; actor: string },
): { token: string; link: UploadLink } {
  if (!registry.current(opts.object))
    throw new SluiceError('SLUICE_UNKNOWN_OBJECT', `there is no object type ${opts.object}; known: ${registry.objects().join(', ')}`)
  const lifetime = parseDuration(opts.expires)
  if (lifetime === undefined || lifetime > MAX_LINK_LIFETIME_MS)
    throw new SluiceError('SLUICE_BAD_REQUEST', `expires must be minutes, hours or days (30m, 24h, 7d), at most 90d; got ${opts.expires}`, {
      errors: [{ pointer: '/expires', message: 'expected a duration like 24h, at most 90d' }],
    })
  return links.create({ object: opts.object, expiresAt: new Date(Date.now() + lifetime), maxUploads: opts.maxUploads, actor: opts.actor })
}
