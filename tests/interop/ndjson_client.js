// A plain Node.js agent: JSON.stringify(msg) + '\n' on a Unix socket, no ipcwire code.
// usage: node ndjson_client.js SOCKET_PATH [TOKEN]
const net = require('net');
const [path, token] = process.argv.slice(2);
const sock = net.createConnection(path);
let buf = '';
const replies = [];
sock.on('connect', () => {
  if (token) sock.write(JSON.stringify({ token }) + '\n');
  for (let i = 0; i < 3; i++) sock.write(JSON.stringify({ op: 'add', a: i, b: 10, text: 'é\n中' }) + '\n');
});
sock.on('data', (chunk) => {
  buf += chunk.toString('utf8');
  let nl;
  while ((nl = buf.indexOf('\n')) >= 0) {
    replies.push(JSON.parse(buf.slice(0, nl)));
    buf = buf.slice(nl + 1);
    if (replies.length === 3) sock.end();
  }
});
// Print whatever arrived (3 replies, or the server's refusal line) once the socket closes.
sock.on('close', () => console.log(JSON.stringify(replies)));
sock.on('error', (e) => console.error('node client error: ' + e.message));
