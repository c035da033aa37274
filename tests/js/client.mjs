// The JavaScript client (npm chromadb 3.x) against a raftchroma node, for tests/test_auth_clients.py.
// Usage: node client.mjs '{"port": 8000, "headers": {...}, "collection": "name"}'
// Connects with the token in `headers`, leaves tenant and database to the token's identity,
// creates a collection without an embedding function (no model download), adds two records
// with explicit embeddings, reads them back, and prints one JSON line. Auth failures are
// printed as {"error": <class name>}.
import { ChromaClient } from "chromadb";

const args = JSON.parse(process.argv[2]);
const client = new ChromaClient({
  host: "127.0.0.1", port: args.port, ssl: false, headers: args.headers,
  tenant: "", database: "",  // empty: the client asks GET /api/v2/auth/identity
});

try {
  const collection = await client.createCollection({ name: args.collection, embeddingFunction: null });
  await collection.add({
    ids: ["a", "b"],
    embeddings: [[1, 0, 0], [0, 1, 0]],
    documents: ["first", "second"],
    metadatas: [{ n: 1 }, { n: 2 }],
  });
  const got = await collection.get({ ids: ["a", "b"], include: ["documents", "metadatas", "embeddings"] });
  const queried = await collection.query({ queryEmbeddings: [[0, 1, 0]], nResults: 1, include: ["documents"] });
  console.log(JSON.stringify({
    tenant: client.tenant, database: client.database, count: await collection.count(),
    ids: got.ids, documents: got.documents, metadatas: got.metadatas, embeddings: got.embeddings,
    nearest: queried.ids,
  }));
} catch (err) {
  console.log(JSON.stringify({ error: err.constructor.name, message: err.message }));
}
