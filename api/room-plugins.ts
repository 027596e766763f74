import type { FastifyPluginAsync } from 'fastify'
import type { RoomServices } from './room-services.js'
import { roomReadRoutes } from './routes/room-reads.js'
import { syncRoutes } from './routes/sync.js'

/** The client API's room and sync routes over an api process's room services. */
export function roomPlugins(services: RoomServices): FastifyPluginAsync[] {
  return [roomReadRoutes(services), syncRoutes(services)]
}
