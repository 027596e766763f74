import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** A notification as a push gateway receives it (push gateway API v1). */
export interface Notification {
  /** Badge updates: '' (with `type` and `sender` null and empty), no event. */
  id?: string
  event_id: string
  room_id: string
  type?: string
  sender?: string
  sender_display_name?: string
  room_name?: string
  prio: string
  content?: Record<string, unknown>
  user_is_target?: boolean
  counts?: { unread: number }
  devices: { app_id: string; pushkey: string; pushkey_ts: number; data: Record<string, unknown>; tweaks: Record<string, unknown> }[]
}

/**
 * A real push gateway on loopback for tests: records what it is sent, answers with the status and body that
 * `answer` gives for each request (default 200 `{"rejected": []}`).
 */
export async function startGateway(): Promise<{ url: string; received: Notification[]; attempts: number; delayMs: number; answer: () => [number, unknown]; close(): Promise<void> }> {
  const gateway = {
    url: '',
    received: [] as Notification[],
    attempts: 0,
    /** How long each answer waits (a slow gateway). */
    delayMs: 0,
    answer: (): [number, unknown] => [200, { rejected: [] }],
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  }
  const server: Server = createServer((req, res) => {
    let body = ''
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')))
    req.on('end', () => {
      gateway.attempts++
      const [status, answer] = req.url === '/_matrix/push/v1/notify' ? gateway.answer() : [404, {}]
      setTimeout(() => {
        if (status >= 200 && status < 300) gateway.received.push((JSON.parse(body) as { notification: Notification }).notification)
        res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(answer))
      }, gateway.delayMs)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  gateway.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/_matrix/push/v1/notify`
  return gateway
}
