// The @tus/server baseline: its README's standalone FileStore server, inside a
// plain http.Server so that GET /readyz answers 200 once it is listening.
//
//     node server.mjs --port PORT --dir DIR
import http from "node:http";
import { parseArgs } from "node:util";

import { FileStore } from "@tus/file-store";
import { Server } from "@tus/server";

const { values } = parseArgs({ options: { port: { type: "string" }, dir: { type: "string" } } });
const tus = new Server({ path: "/files", datastore: new FileStore({ directory: values.dir }) });

http
  .createServer((req, res) => {
    if (req.method === "GET" && req.url === "/readyz") {
      res.writeHead(200, { "Content-Type": "text/plain" }).end("ok\n");
      return;
    }
    tus.handle(req, res);
  })
  .listen(Number(values.port), "127.0.0.1", () => console.log(`@tus/server on 127.0.0.1:${values.port}`));
