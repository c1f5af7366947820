// A plain Node.js server speaking JSON lines; prints "ready" once listening.
// usage: node ndjson_server.js SOCKET_PATH
const net = require('net');
const path = process.argv[2];
const server = net.createServer((sock) => {
  let buf = '';
  sock.on('data', (chunk) => {
    buf += chunk.toString('utf8');
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const msg = JSON.parse(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      sock.write(JSON.stringify({ from: 'node', got: msg }) + '\n');
    }
  });
  sock.on('end', () => { sock.end(); server.close(); });
});
server.listen(path, () => console.log('ready'));
