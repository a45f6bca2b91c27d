import type { FastifyInstance, FastifyRequest } from 'fastify'
import { type ApiKeyInfo, type ApiKeyStore, hasScope, type Scope } from '../../storage/index.ts'
import { SluiceError } from '../errors.ts'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The scope a route needs; `public` routes (health) need no key. */
    scope?: Scope | 'public'
  }
  interface FastifyRequest {
    apiKey?: ApiKeyInfo
  }
}

function bearer(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization
  if (!header) return undefined
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header)
  return m?.[1]
}

/** Every route needs a live key with its declared scope (default `admin`, so a forgotten declaration fails closed). */
export function installAuth(app: FastifyInstance, keys: ApiKeyStore): void {
  app.decorateRequest('apiKey', undefined)
  app.addHook('onRequest', async (request) => {
    const scope = request.routeOptions.config?.scope ?? 'admin'
    if (scope === 'public' || !request.routeOptions.url) return
    const secret = bearer(request)
    if (!secret) throw new SluiceError('SLUICE_UNAUTHORIZED', 'send an API key as Authorization: Bearer <key>')
    const key = keys.verify(secret)
    if (!key) throw new SluiceError('SLUICE_UNAUTHORIZED', 'the API key is unknown or revoked')
    if (!hasScope(key, scope)) throw new SluiceError('SLUICE_FORBIDDEN', `this route needs the ${scope} scope; the key has ${key.scopes.join(', ')}`)
    keys.touch(key)
    request.apiKey = key
  })
}
