import type { FastifyPluginAsync } from 'fastify'
import type { RoomServices } from './room-services.js'

/** The client API's room and sync routes over an api process's room services. */
export function roomPlugins(services: RoomServices): FastifyPluginAsync[] {
  void services
  return []
}
