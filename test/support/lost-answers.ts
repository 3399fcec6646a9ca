/**
 * A TCP proxy in front of a plaintext HTTP/2 (gRPC) server that can lose the answer to one
 * request: the request reaches the server, which acts on it, but nothing of its answer comes
 * back; a moment later every connection is reset, which is how the client learns of it. This
 * is the fault that makes a retried write dangerous (it was applied; the caller cannot tell).
 *
 * Requests are counted as the client's HEADERS frames (RFC 9113 §4.1, §6.2: each gRPC call opens
 * a stream with one), read from the 9-byte frame headers after the 24-byte connection preface.
 */
import net from 'node:net';
import { trackPair } from './tcp-link.ts';

const PREFACE_BYTES = 24;
const FRAME_HEADER_BYTES = 9;
const HEADERS = 0x1;

export class AnswerLosingLink {
  readonly server: net.Server;
  #target: number;
  #sockets = new Set<net.Socket>();
  #losing: { left: number; holdMs: number; done: () => void } | undefined;
  #silent = false;

  private constructor(target: number) {
    this.#target = target;
    this.server = net.createServer((client) => this.#accept(client));
  }

  static async open(target: number): Promise<AnswerLosingLink> {
    const link = new AnswerLosingLink(target);
    await new Promise<void>((resolve) => link.server.listen(0, '127.0.0.1', resolve));
    return link;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  /**
   * Loses the answer to the `nth` request from now (1: the next one): from that request on
   * nothing flows back, and `holdMs` later (time for the server to act) every connection is
   * reset. Resolves once they are; new connections then work normally.
   */
  loseAnswerTo(nth = 1, holdMs = 1_000): Promise<void> {
    return new Promise((done) => (this.#losing = { left: nth, holdMs, done }));
  }

  #accept(client: net.Socket): void {
    const upstream = net.connect(this.#target, '127.0.0.1');
    trackPair(client, upstream, this.#sockets);
    const requests = new RequestCounter(() => this.#request());
    client.on('data', (d: Buffer) => {
      upstream.write(d);
      requests.feed(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (!this.#silent) client.write(d);
    });
  }

  #request(): void {
    const losing = this.#losing;
    if (!losing || --losing.left > 0) return;
    this.#losing = undefined;
    this.#silent = true;
    setTimeout(() => {
      for (const s of this.#sockets) s.destroy();
      this.#silent = false;
      losing.done();
    }, losing.holdMs);
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Calls `onRequest` for each HEADERS frame in one connection's client-to-server bytes. */
class RequestCounter {
  #pending = Buffer.alloc(0);
  #prefaceLeft = PREFACE_BYTES;
  #onRequest: () => void;

  constructor(onRequest: () => void) {
    this.#onRequest = onRequest;
  }

  feed(chunk: Buffer): void {
    let buf = Buffer.concat([this.#pending, chunk]);
    const skip = Math.min(this.#prefaceLeft, buf.length);
    this.#prefaceLeft -= skip;
    buf = buf.subarray(skip);
    while (buf.length >= FRAME_HEADER_BYTES) {
      const frameBytes = FRAME_HEADER_BYTES + buf.readUIntBE(0, 3);
      if (buf.length < frameBytes) break;
      if (buf[3] === HEADERS) this.#onRequest();
      buf = buf.subarray(frameBytes);
    }
    this.#pending = Buffer.from(buf);
  }
}
