/**
 * A network link that a test can partition: a TCP proxy on 127.0.0.1 in front of one target
 * port. `cut()` makes it a partition, not a crash: no byte moves in either direction, but no
 * connection is closed or refused either (the sockets stop reading, so each side's kernel
 * buffers what is sent, as TCP does while packets are dropped and retransmitted). `heal()`
 * lets everything held through, so a request sent during the partition arrives late, the way a
 * deposed leader's write would. TLS passes through untouched.
 */
import net from 'node:net';

export class TcpLink {
  readonly server: net.Server;
  target = 0;
  #sockets = new Set<net.Socket>();
  #cut = false;
  #closed = false;

  private constructor() {
    this.server = net.createServer((client) => this.#accept(client));
  }

  /** A link listening on a free port; its target may be set later, before the first connection. */
  static async open(target = 0): Promise<TcpLink> {
    const link = new TcpLink();
    link.target = target;
    await new Promise<void>((resolve) => link.server.listen(0, '127.0.0.1', resolve));
    return link;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  get isCut(): boolean {
    return this.#cut;
  }

  #accept(client: net.Socket): void {
    if (this.#closed) return void client.destroy();
    const upstream = net.connect(this.target, '127.0.0.1');
    for (const s of trackPair(client, upstream, this.#sockets)) if (this.#cut) s.pause();
    // Not pipe(): its backpressure handling resumes a source on 'drain', which would leak data through a cut.
    client.on('data', (d) => upstream.write(d));
    upstream.on('data', (d) => client.write(d));
  }

  /** Partitions: nothing flows either way until heal(); new connections are accepted and held. */
  cut(): void {
    this.#cut = true;
    for (const s of this.#sockets) s.pause();
  }

  heal(): void {
    this.#cut = false;
    for (const s of this.#sockets) s.resume();
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/**
 * Tracks a proxied connection's two sockets in `sockets` until they close; either closing (or
 * failing) closes both. Returns them.
 */
export function trackPair(client: net.Socket, upstream: net.Socket, sockets: Set<net.Socket>): [net.Socket, net.Socket] {
  for (const s of [client, upstream]) {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => {
      sockets.delete(s);
      client.destroy();
      upstream.destroy();
    });
  }
  return [client, upstream];
}
