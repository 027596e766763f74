import type { FastifyPluginAsync } from 'fastify'
import type { RoomServices } from './room-services.js'
import { adminRoutes } from './routes/admin.js'
import { deactivateRoutes } from './routes/deactivate.js'
import { directoryRoutes } from './routes/directory.js'
import { roomReadRoutes } from './routes/room-reads.js'
import { reportRoutes } from './routes/reports.js'
import { roomWriteRoutes } from './routes/rooms.js'
import { searchRoutes } from './routes/search.js'
import { syncRoutes } from './routes/sync.js'

/** The client API's room, directory, search, report, sync and deactivation routes, and the admin API, over an api process's room services. */
export function roomPlugins(services: RoomServices): FastifyPluginAsync[] {
  return [roomWriteRoutes(services), directoryRoutes(services), roomReadRoutes(services), searchRoutes(services), reportRoutes(services), syncRoutes(services), deactivateRoutes(services), adminRoutes(services)]
}
