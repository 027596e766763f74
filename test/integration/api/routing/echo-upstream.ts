import { createHash } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/** What an echo upstream answers: who it is and what it received. */
export interface Echo {
  upstream: string
  method: string
  url: string
  bodyBytes: number
  bodySha256: string
  headers: Record<string, string | string[] | undefined>
}

export interface EchoUpstream {
  readonly name: string
  readonly port: number
  /** Requests served, in order. */
  readonly seen: Echo[]
  /** `/hang` requests whose client connection closed before an answer. */
  readonly abandoned: { count: number }
  close(): Promise<void>
}

/**
 * A stand-in for a Myelin process's client listener: answers every request with an `Echo` JSON
 * body, with the status of a `status` query parameter (default 200). A path containing
 * `/download/` answers `bytes` (query parameter) deterministic bytes instead; a path ending in
 * `/hang` never answers.
 */
export async function startEchoUpstream(name: string, port = 0): Promise<EchoUpstream> {
  const seen: Echo[] = []
  const abandoned = { count: 0 }
  const server: Server = createServer((req, res) => {
    const hash = createHash('sha256')
    let bodyBytes = 0
    req.on('data', (chunk: Buffer) => {
      hash.update(chunk)
      bodyBytes += chunk.length
    })
    req.on('end', () => {
      const url = req.url ?? '/'
      const echo: Echo = { upstream: name, method: req.method ?? '', url, bodyBytes, bodySha256: hash.digest('hex'), headers: req.headers }
      seen.push(echo)
      if (url.endsWith('/hang')) {
        res.on('close', () => abandoned.count++)
        return
      }
      if (url.includes('/download/')) {
        const bytes = Number(new URL(url, 'http://x').searchParams.get('bytes') ?? '0')
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes, 'x-upstream': name })
        res.end(patternBytes(bytes))
        return
      }
      const body = JSON.stringify(echo)
      const status = Number(new URL(url, 'http://x').searchParams.get('status') ?? '200')
      res.writeHead(status, { 'content-type': 'application/json', 'x-upstream': name, 'set-cookie': ['a=1', 'b=2'] })
      res.end(body)
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })
  return {
    name,
    port: (server.address() as AddressInfo).port,
    seen,
    abandoned,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

/** `n` bytes of a fixed pattern, for checking large bodies end to end. */
export function patternBytes(n: number): Buffer {
  const out = Buffer.alloc(n)
  for (let i = 0; i < n; i++) out[i] = (i * 31 + 7) & 0xff
  return out
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/** A syt_ access token of the shape Myelin issues for `localpart`. */
export function sytToken(localpart: string, device: string): string {
  const random = createHash('sha256').update(device).digest('hex').slice(0, 20)
  return `syt_${Buffer.from(localpart, 'utf8').toString('base64url')}_${random}_${random.slice(0, 6)}`
}
