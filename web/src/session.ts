import { createContext } from 'preact'
import { useContext } from 'preact/hooks'
import type { RouteIndex } from './api.ts'
import type { KeyInfo } from './types.ts'

/** Who is signed in, and what this server offers: every page reads it to decide what it can show. */
export interface Signed {
  key: KeyInfo
  routes: RouteIndex
  /** Objects with a schema on file, kept current by the live feed's schema events. */
  objects: string[]
  refreshObjects: () => void
}

export const SignedContext = createContext<Signed | undefined>(undefined)

export function useSigned(): Signed {
  const signed = useContext(SignedContext)
  if (!signed) throw new Error('useSigned outside a signed-in dashboard')
  return signed
}

/** The object a page starts on: transactions, what fraud work is mostly about, when there are any. */
export const primaryObject = (objects: string[]): string | undefined => (objects.includes('transaction') ? 'transaction' : objects[0])

export const isAdmin = (key: KeyInfo) => key.scopes.includes('admin')
export const canIngest = (key: KeyInfo) => key.scopes.includes('admin') || key.scopes.includes('ingest')
