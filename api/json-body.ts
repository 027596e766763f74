import type { FastifyInstance } from 'fastify'
import { MatrixError } from './errors.js'

/**
 * Request bodies are JSON whatever the Content-Type says (as Synapse: some clients send
 * `text/plain` or nothing). An empty body is `undefined` (routes that need one answer
 * M_NOT_JSON); unparseable text is 400 M_NOT_JSON; JSON that Postgres cannot store or that nests
 * absurdly deep is 400 M_BAD_JSON here, before any handler sees it.
 */

/** Deeper nesting is refused (Postgres' jsonb and recursive code have stack limits). */
export const maxJsonDepth = 100

/**
 * Why a parsed JSON value may not be accepted, or undefined when it is fine: strings or keys with
 * U+0000 (Postgres text and jsonb cannot hold it), nesting deeper than `maxJsonDepth`.
 * Iterative, so hostile input cannot overflow the stack.
 *
 * @example
 * jsonProblem({ a: 'x\u0000' }) // 'strings must not contain U+0000'
 * jsonProblem({ a: [1, 2] }) // undefined
 */
export function jsonProblem(value: unknown): string | undefined {
  const stack: { value: unknown; depth: number }[] = [{ value, depth: 0 }]
  while (stack.length > 0) {
    const { value: v, depth } = stack.pop()!
    if (typeof v === 'string') {
      if (v.includes('\u0000')) return 'strings must not contain U+0000'
      continue
    }
    if (typeof v !== 'object' || v === null) continue
    if (depth >= maxJsonDepth) return `JSON nests deeper than ${maxJsonDepth} levels`
    if (Array.isArray(v)) {
      for (const item of v) stack.push({ value: item, depth: depth + 1 })
      continue
    }
    for (const [key, item] of Object.entries(v)) {
      if (key.includes('\u0000')) return 'keys must not contain U+0000'
      stack.push({ value: item, depth: depth + 1 })
    }
  }
  return undefined
}

/** Replaces fastify's body parsers with the JSON-for-everything parser described above. */
export function installJsonBodyParser(app: FastifyInstance): void {
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body: Buffer, done) => {
    if (body.length === 0) return done(null, undefined)
    let value: unknown
    try {
      value = JSON.parse(body.toString('utf8'))
    } catch {
      return done(new MatrixError(400, 'M_NOT_JSON', 'Content not JSON'))
    }
    const problem = jsonProblem(value)
    if (problem !== undefined) return done(new MatrixError(400, 'M_BAD_JSON', problem))
    done(null, value)
  })
}
