// The ingest bench's baseline: the same stack (Node, fastify, JSON body parsing) doing no other work,
// so the ratio to it shows what Sluice's validation, JetStream round trip and bookkeeping cost.
import Fastify from 'fastify'

const port = Number(process.env.BARE_SERVER_PORT ?? 0)
const app = Fastify()
app.post('/transaction', async (_request, reply) => reply.code(202).send({ ok: true }))
await app.listen({ host: '127.0.0.1', port })
