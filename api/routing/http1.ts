/**
 * The small part of HTTP/1.1 (RFC 9112) the router needs to forward messages byte for byte:
 * parsing a request or response head, rewriting its header lines, and finding where a body ends
 * (by `Content-Length`, by chunked framing, or at the close of the connection). Bodies are never
 * decoded: the bytes a peer sent are the bytes the other side gets.
 *
 * Strict where leniency would let a request be read two ways (request smuggling): bare CR or LF,
 * obsolete line folding, a `Content-Length` that is not one decimal number, or both
 * `Content-Length` and `Transfer-Encoding` are errors, not guesses.
 */

/** Largest request or response head accepted, like node:http's default `maxHeaderSize`. */
export const maxHeadBytes = 16 * 1024

/** A header line as received: `name` in its original case, `lower` for matching. */
export interface HeaderLine {
  readonly name: string
  readonly lower: string
  readonly value: string
}

/** How the body of a message is delimited. */
export type BodyFraming = { readonly kind: 'none' } | { readonly kind: 'length'; readonly bytes: number } | { readonly kind: 'chunked' } | { readonly kind: 'close' }

export interface RequestHead {
  readonly method: string
  readonly target: string
  /** `HTTP/1.1` or `HTTP/1.0`. */
  readonly version: string
  readonly headers: readonly HeaderLine[]
  readonly framing: BodyFraming
  /** The client asked to close the connection after this exchange (or did not ask to keep it, in HTTP/1.0). */
  readonly close: boolean
  /** `Expect: 100-continue` was sent. */
  readonly expectContinue: boolean
}

export interface ResponseHead {
  readonly status: number
  readonly statusLine: string
  readonly headers: readonly HeaderLine[]
  readonly framing: BodyFraming
  /** The upstream will close the connection after this response. */
  readonly close: boolean
}

/** A malformed message; `status` is what a client gets for it (400 or 431). */
export class HttpParseError extends Error {
  constructor(
    readonly status: 400 | 431 | 502,
    message: string,
  ) {
    super(message)
    this.name = 'HttpParseError'
  }
}

const crlfcrlf = Buffer.from('\r\n\r\n')
const tokenPattern = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const methodPattern = tokenPattern
const controlPattern = /[\r\n\0]/

/** Hop-by-hop headers (RFC 9110 7.6.1), plus `expect` (the router answers it) and proxy auth. */
export const hopByHopHeaders = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect', 'proxy-authorization', 'proxy-authenticate'])

/**
 * The length of the head at the start of `buffer` (through its blank line), or -1 while it is
 * incomplete.
 *
 * @throws HttpParseError 431 when `maxHeadBytes` pass without a complete head.
 */
export function headLength(buffer: Buffer): number {
  const end = buffer.indexOf(crlfcrlf)
  if (end === -1) {
    if (buffer.length > maxHeadBytes) throw new HttpParseError(431, 'request head too large')
    return -1
  }
  if (end + 4 > maxHeadBytes) throw new HttpParseError(431, 'request head too large')
  return end + 4
}

function splitHead(text: string, status: 400 | 502): { start: string; headers: HeaderLine[] } {
  const lines = text.slice(0, -4).split('\r\n')
  const start = lines[0] as string
  if (controlPattern.test(start)) throw new HttpParseError(status, 'bare CR or LF in the start line')
  const headers: HeaderLine[] = []
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i] as string
    const colon = line.indexOf(':')
    if (colon <= 0) throw new HttpParseError(status, `malformed header line ${JSON.stringify(line.slice(0, 64))}`)
    const name = line.slice(0, colon)
    if (!tokenPattern.test(name)) throw new HttpParseError(status, `malformed header name ${JSON.stringify(name.slice(0, 64))}`)
    const value = line.slice(colon + 1).trim()
    if (controlPattern.test(value)) throw new HttpParseError(status, 'bare CR or LF in a header value')
    headers.push({ name, lower: name.toLowerCase(), value })
  }
  return { start, headers }
}

/** The comma-separated tokens of every `name` header, lowercased. */
export function headerTokens(headers: readonly HeaderLine[], name: string): string[] {
  const out: string[] = []
  for (const h of headers) {
    if (h.lower !== name) continue
    for (const token of h.value.split(',')) {
      const t = token.trim().toLowerCase()
      if (t.length > 0) out.push(t)
    }
  }
  return out
}

/** The value of the one `name` header, or undefined; several are joined with `, `. */
export function headerValue(headers: readonly HeaderLine[], name: string): string | undefined {
  let out: string | undefined
  for (const h of headers) if (h.lower === name) out = out === undefined ? h.value : `${out}, ${h.value}`
  return out
}

function bodyFraming(headers: readonly HeaderLine[], status: 400 | 502): BodyFraming | undefined {
  const encodings = headerTokens(headers, 'transfer-encoding')
  const lengths = headers.filter((h) => h.lower === 'content-length').map((h) => h.value)
  if (encodings.length > 0) {
    if (lengths.length > 0) throw new HttpParseError(status, 'both Content-Length and Transfer-Encoding')
    if (encodings.at(-1) !== 'chunked') return undefined
    return { kind: 'chunked' }
  }
  if (lengths.length === 0) return undefined
  const distinct = new Set(lengths.flatMap((v) => v.split(',').map((s) => s.trim())))
  const [only] = distinct
  if (distinct.size !== 1 || only === undefined || !/^\d{1,15}$/.test(only)) throw new HttpParseError(status, 'invalid Content-Length')
  const bytes = Number(only)
  return bytes === 0 ? { kind: 'none' } : { kind: 'length', bytes }
}

/**
 * Parses a request head (`headLength` bytes of `buffer`).
 *
 * @throws HttpParseError 400 for anything malformed, or a request body that is not delimited
 *   (a `Transfer-Encoding` other than chunked).
 */
export function parseRequestHead(buffer: Buffer, length: number): RequestHead {
  const { start, headers } = splitHead(buffer.toString('latin1', 0, length), 400)
  const parts = start.split(' ')
  const [method, target, version] = parts as [string, string, string]
  if (parts.length !== 3 || !methodPattern.test(method) || target.length === 0 || (version !== 'HTTP/1.1' && version !== 'HTTP/1.0')) {
    throw new HttpParseError(400, `malformed request line ${JSON.stringify(start.slice(0, 64))}`)
  }
  const framing = bodyFraming(headers, 400)
  if (framing === undefined && headers.some((h) => h.lower === 'transfer-encoding')) throw new HttpParseError(400, 'unsupported Transfer-Encoding')
  const connection = headerTokens(headers, 'connection')
  const close = version === 'HTTP/1.0' ? !connection.includes('keep-alive') : connection.includes('close')
  const expectContinue = headerTokens(headers, 'expect').includes('100-continue')
  return { method, target, version, headers, framing: framing ?? { kind: 'none' }, close, expectContinue }
}

/**
 * Parses a response head to `method`: 1xx, 204, 304 and answers to HEAD have no body; a body
 * with neither length nor chunking runs to the end of the connection.
 *
 * @throws HttpParseError 502 for anything malformed.
 */
export function parseResponseHead(buffer: Buffer, length: number, method: string): ResponseHead {
  const { start, headers } = splitHead(buffer.toString('latin1', 0, length), 502)
  const match = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(start)
  if (match === null) throw new HttpParseError(502, `malformed status line ${JSON.stringify(start.slice(0, 64))}`)
  const status = Number(match[1])
  const framed = bodyFraming(headers, 502)
  const bodiless = method === 'HEAD' || status < 200 || status === 204 || status === 304
  const framing: BodyFraming = bodiless ? { kind: 'none' } : (framed ?? { kind: 'close' })
  const connection = headerTokens(headers, 'connection')
  const close = framing.kind === 'close' || connection.includes('close') || start.startsWith('HTTP/1.0')
  return { status, statusLine: start, headers, framing, close }
}

/**
 * Serializes a head: `startLine`, the header lines minus hop-by-hop ones and those the
 * `Connection` header names, `keep` lowercased names kept even so, then `extra` lines.
 */
export function serializeHead(startLine: string, headers: readonly HeaderLine[], extra: readonly string[] = [], keep: ReadonlySet<string> = noneKept): Buffer {
  const dropped = new Set(headerTokens(headers, 'connection'))
  let text = `${startLine}\r\n`
  for (const h of headers) {
    if ((hopByHopHeaders.has(h.lower) || dropped.has(h.lower)) && !keep.has(h.lower)) continue
    text += `${h.name}: ${h.value}\r\n`
  }
  for (const line of extra) text += `${line}\r\n`
  return Buffer.from(`${text}\r\n`, 'latin1')
}

const noneKept: ReadonlySet<string> = new Set()

/**
 * Follows a body's framing over the bytes that arrive, without copying them: `take(chunk)` says
 * how many bytes of `chunk` belong to the body and whether the body ended there. Chunked bodies
 * are walked through their size lines, data, and trailer section.
 *
 * @example
 * const body = new BodyTracker({ kind: 'length', bytes: 10 })
 * body.take(Buffer.alloc(4)) // { used: 4, done: false }
 * body.take(Buffer.alloc(8)) // { used: 6, done: true }
 */
export class BodyTracker {
  #remaining: number
  #state: 'size' | 'data' | 'data-crlf' | 'trailer' | 'done' | 'close'
  /** The current size or trailer line, across chunks. */
  #line = ''
  #trailerBytes = 0

  constructor(
    framing: BodyFraming,
    private readonly errorStatus: 400 | 502 = 400,
  ) {
    this.#remaining = framing.kind === 'length' ? framing.bytes : 0
    this.#state = framing.kind === 'none' ? 'done' : framing.kind === 'length' ? 'data' : framing.kind === 'chunked' ? 'size' : 'close'
    this.#chunked = framing.kind === 'chunked'
  }

  readonly #chunked: boolean

  get done(): boolean {
    return this.#state === 'done'
  }

  /** @throws HttpParseError for malformed chunked framing. */
  take(chunk: Buffer): { used: number; done: boolean } {
    let i = 0
    while (i < chunk.length && this.#state !== 'done') {
      switch (this.#state) {
        case 'close':
          return { used: chunk.length, done: false }
        case 'data': {
          const n = Math.min(this.#remaining, chunk.length - i)
          i += n
          this.#remaining -= n
          if (this.#remaining === 0) this.#state = this.#chunked ? 'data-crlf' : 'done'
          break
        }
        case 'size':
        case 'data-crlf':
        case 'trailer': {
          const lf = chunk.indexOf(10, i)
          const end = lf === -1 ? chunk.length : lf + 1
          this.#line += chunk.toString('latin1', i, end)
          i = end
          if (this.#line.length > 1024 && this.#state !== 'trailer') throw new HttpParseError(this.errorStatus, 'chunk size line too long')
          if (lf === -1) break
          this.#endLine()
          break
        }
      }
    }
    return { used: i, done: this.#state === 'done' }
  }

  #endLine(): void {
    const line = this.#line
    this.#line = ''
    if (!line.endsWith('\r\n') || controlPattern.test(line.slice(0, -2))) throw new HttpParseError(this.errorStatus, 'malformed chunked framing')
    const content = line.slice(0, -2)
    if (this.#state === 'data-crlf') {
      if (content !== '') throw new HttpParseError(this.errorStatus, 'chunk data longer than its size')
      this.#state = 'size'
    } else if (this.#state === 'size') {
      const size = content.split(';', 1)[0]?.trim() ?? ''
      if (!/^[0-9a-fA-F]{1,12}$/.test(size)) throw new HttpParseError(this.errorStatus, 'malformed chunk size')
      this.#remaining = parseInt(size, 16)
      this.#state = this.#remaining === 0 ? 'trailer' : 'data'
    } else {
      this.#trailerBytes += line.length
      if (this.#trailerBytes > maxHeadBytes) throw new HttpParseError(this.errorStatus, 'chunked trailer too large')
      if (content === '') this.#state = 'done'
    }
  }
}
