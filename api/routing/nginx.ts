import { eventWriters, type MyelinConfig } from '../../storage/config.js'
import { StorageError } from '../../storage/errors.js'

/** A process's client listener, as nginx reaches it. */
export interface NginxWorker {
  readonly name: string
  /** Workers with role `api` (or `main`, when there is no api worker) serve client traffic. */
  readonly role: string
  readonly host: string
  readonly port: number
}

export interface NginxConfigOptions {
  readonly listenPort: number
  /** Default `0.0.0.0`. */
  readonly listenAddress?: string
  readonly workers: readonly NginxWorker[]
  /** Main-context settings; omit for the distribution's defaults. Tests run nginx unprivileged in a folder. */
  readonly main?: {
    /** `user` directive, e.g. `nobody` or `www-data`. */
    readonly user?: string
    /** Default 1. */
    readonly workerProcesses?: number | 'auto'
    readonly pidFile?: string
    /** Default `stderr`. */
    readonly errorLog?: string
    /** `off` for no access log (the default), or a file. */
    readonly accessLog?: string
    /** `daemon off;` for a foreground nginx (supervisors, containers, tests). */
    readonly foreground?: boolean
    /** Folder for request-body and proxy temp files; relative paths are under nginx's `-p` prefix. */
    readonly tempDir?: string
  }
}

const namePattern = /^[A-Za-z0-9_.-]+$/
const hostPattern = /^[A-Za-z0-9_.:[\]-]+$/
/** Room IDs become exact map keys inside double quotes. */
const pinnableRoom = /^![^\s"'\\$;{}]+$/

/**
 * Renders an nginx.conf that routes the seed's path table (Synapse `docs/workers.md`) to
 * Myelin's processes:
 *
 * - sync (`/sync`, sliding sync's `/unstable/org.matrix.simplified_msc3575/sync`, `/events`,
 *   `/initialSync`, `/rooms/{id}/initialSync`) → upstream
 *   `myelin_sync`: the api workers with `hash $myelin_user consistent`, where `$myelin_user` is
 *   the base64url localpart of a `syt_<localpart>_<random>_<check>` token from the
 *   `Authorization` header or the `access_token` parameter (the seed's maps, with the regex adapted
 *   to localparts that contain `_`); a request without a token hashes `$request_id` (spread);
 * - room writes (`PUT|POST /rooms/{id}/send|state|redact…`, membership, `/join|knock/!room`) →
 *   `myelin_rooms`: the api workers with `hash $myelin_room consistent`, and the api worker
 *   forwards each event to the room's owner persister. Rendezvous ownership cannot be computed in
 *   nginx, but pins (`room_pins`) can: writes to a pinned room go straight to the pinned
 *   persister's client listener (the persister fast path);
 * - everything else → `myelin_api`, round robin.
 *
 * @throws StorageError `ES_CONFIG_INVALID` when no worker serves clients, or a name, host or
 *   pinned room ID cannot be written safely into the file.
 * @example
 * const text = renderNginxConfig(config, {
 *   listenPort: 8008,
 *   workers: [
 *     { name: 'api1', role: 'api', host: '127.0.0.1', port: 8081 },
 *     { name: 'persister1', role: 'persister', host: '127.0.0.1', port: 8091 },
 *   ],
 * })
 * await writeFile('/etc/nginx/nginx.conf', text)
 */
export function renderNginxConfig(config: MyelinConfig, options: NginxConfigOptions): string {
  const problems: string[] = []
  for (const worker of options.workers) {
    if (!namePattern.test(worker.name)) problems.push(`worker name ${JSON.stringify(worker.name)} may only contain letters, digits, _ . -`)
    if (!hostPattern.test(worker.host)) problems.push(`worker ${worker.name}: host ${JSON.stringify(worker.host)} is not a plain host name or address`)
    if (!Number.isInteger(worker.port) || worker.port < 1 || worker.port > 65535) problems.push(`worker ${worker.name}: port ${worker.port} is out of range`)
  }
  const apiWorkers = options.workers.filter((w) => w.role === 'api')
  const clientWorkers = apiWorkers.length > 0 ? apiWorkers : options.workers.filter((w) => w.role === 'main')
  if (clientWorkers.length === 0) problems.push('no worker with role api or main serves client requests (name each api worker with --worker NAME=api@HOST:PORT; instance_map lists only the processes reachable over replication)')
  const writers = new Set(eventWriters(config))
  const persisters = new Map(options.workers.filter((w) => w.role === 'persister' && writers.has(w.name)).map((w) => [w.name, w]))
  const pins = Object.entries(config.room_pins).filter(([, writer]) => persisters.has(writer))
  for (const [roomId] of pins) {
    if (!pinnableRoom.test(roomId)) problems.push(`pinned room ${JSON.stringify(roomId)} cannot be written into an nginx map`)
  }
  if (problems.length > 0) throw new StorageError('ES_CONFIG_INVALID', `cannot render the nginx config: ${problems.join('; ')}`)

  const main = options.main ?? {}
  const server = (w: NginxWorker): string => `    server ${w.host.includes(':') && !w.host.startsWith('[') ? `[${w.host}]` : w.host}:${w.port}; # ${w.name}`
  const servers = clientWorkers.map(server).join('\n')
  const pinnedPersisters = [...new Set(pins.map(([, writer]) => writer))]
  const lines: string[] = [
    `# Generated by myelin proxy-config for ${config.server_name}. Routes the worker path table:`,
    '# sync by user, room writes by room (pinned rooms to their persister), the rest round robin.',
    ...(main.user ? [`user ${main.user};`] : []),
    `worker_processes ${main.workerProcesses ?? 1};`,
    ...(main.foreground ? ['daemon off;'] : []),
    ...(main.pidFile ? [`pid ${main.pidFile};`] : []),
    `error_log ${main.errorLog ?? 'stderr'} warn;`,
    '',
    'events {',
    '  worker_connections 4096;',
    '}',
    '',
    'http {',
    `  access_log ${main.accessLog ?? 'off'};`,
    ...(main.tempDir
      ? [
          `  client_body_temp_path ${main.tempDir}/client_body;`,
          `  proxy_temp_path ${main.tempDir}/proxy;`,
          `  fastcgi_temp_path ${main.tempDir}/fastcgi;`,
          `  uwsgi_temp_path ${main.tempDir}/uwsgi;`,
          `  scgi_temp_path ${main.tempDir}/scgi;`,
        ]
      : []),
    '  map_hash_bucket_size 256;',
    '',
    '  # The user key: the base64url localpart of a syt_<localpart>_<random>_<check> token.',
    '  map $arg_access_token $myelin_user_from_param {',
    '    default $arg_access_token;',
    '    "~^syt_(?<myelin_param_user>.+)_[A-Za-z0-9]+_[A-Za-z0-9]+$" $myelin_param_user;',
    '    "" $request_id;',
    '  }',
    '  map $http_authorization $myelin_user {',
    '    default $http_authorization;',
    '    "~^Bearer syt_(?<myelin_header_user>.+)_[A-Za-z0-9]+_[A-Za-z0-9]+$" $myelin_header_user;',
    '    "" $myelin_user_from_param;',
    '  }',
    '',
    '  # Writes to a pinned room go to its persister; other room writes to the api workers.',
    '  map $request_method $myelin_write {',
    '    default 0;',
    '    PUT 1;',
    '    POST 1;',
    '  }',
    '  map "$myelin_write$myelin_room" $myelin_room_upstream {',
    '    default myelin_rooms;',
    ...pins.map(([roomId, writer]) => `    "1${roomId}" myelin_persister_${writer};`),
    '  }',
    '',
    '  upstream myelin_api {',
    servers,
    '    keepalive 32;',
    '  }',
    '  upstream myelin_sync {',
    '    hash $myelin_user consistent;',
    servers,
    '    keepalive 32;',
    '  }',
    '  upstream myelin_rooms {',
    '    hash $myelin_room consistent;',
    servers,
    '    keepalive 32;',
    '  }',
    ...pinnedPersisters.flatMap((name) => {
      const worker = persisters.get(name) as NginxWorker
      return [`  upstream myelin_persister_${name} {`, server(worker), '    keepalive 8;', '  }']
    }),
    '',
    '  server {',
    `    listen ${options.listenAddress ?? '0.0.0.0'}:${options.listenPort};`,
    // Uploads up to the content repository's limit (and some room for the request's head).
    `    client_max_body_size ${Math.ceil(config.media.max_upload_bytes / 1024) + 64}k;`,
    '    proxy_http_version 1.1;',
    '    proxy_set_header Connection "";',
    '    proxy_set_header Host $host;',
    '    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    '    proxy_set_header X-Forwarded-Proto $scheme;',
    '    # Long-polling sync holds a request for its timeout (30 s by default in clients).',
    '    proxy_read_timeout 180s;',
    '',
    '    location ~ ^/_matrix/client/(r0|v3)/sync$ { proxy_pass http://myelin_sync; }',
    '    location ~ ^/_matrix/client/unstable/org\\.matrix\\.simplified_msc3575/sync$ { proxy_pass http://myelin_sync; }',
    '    location ~ ^/_matrix/client/(api/v1|r0|v3)/events$ { proxy_pass http://myelin_sync; }',
    '    location ~ ^/_matrix/client/(api/v1|r0|v3)/initialSync$ { proxy_pass http://myelin_sync; }',
    '    location ~ ^/_matrix/client/(api/v1|r0|v3)/rooms/[^/]+/initialSync$ { proxy_pass http://myelin_sync; }',
    '',
    '    location ~ ^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/(?<myelin_room>[^/]+)/(send|state|redact)(/|$) { proxy_pass http://$myelin_room_upstream; }',
    '    location ~ ^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/(?<myelin_room>[^/]+)/(join|invite|leave|ban|unban|kick)$ { proxy_pass http://$myelin_room_upstream; }',
    '    location ~ ^/_matrix/client/(api/v1|r0|v3|unstable)/(join|knock)/(?<myelin_room>![^/]+)$ { proxy_pass http://$myelin_room_upstream; }',
    '',
    '    location / { proxy_pass http://myelin_api; }',
    '  }',
    '}',
    '',
  ]
  return lines.join('\n')
}
