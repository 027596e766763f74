import type { FastifyInstance } from 'fastify'

/**
 * CORS as Synapse does it, so Matrix clients running in browsers can call the API: every
 * response allows any origin, and an `OPTIONS` preflight to any path answers 204 at once
 * (no authentication, no routing).
 */
export const corsHeaders = {
  'access-control-allow-origin': '*',
  'access-control-allow-methods': 'GET, HEAD, POST, PUT, DELETE, OPTIONS',
  'access-control-allow-headers': 'X-Requested-With, Content-Type, Authorization, Date',
  'access-control-expose-headers': 'Server',
} as const

export function installCors(app: FastifyInstance): void {
  app.addHook('onRequest', async (_request, reply) => {
    reply.headers(corsHeaders)
  })
  app.options('*', { schema: {} }, async (_request, reply) => reply.code(204).send())
}
