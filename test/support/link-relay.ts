/**
 * TCP links (tcp-link.ts) run in a child process of their own, so the traffic they relay between
 * the cluster's processes never waits on the test process: a test that reads logs, parses audit
 * segments or generates keys blocks its event loop for a second or more, which on in-process
 * links would look like a network stall to every component (an audit replica leader that hears
 * from no peer steps down). The parent keeps the same operations: open links, set a link's
 * target, cut and heal sets of links at once, close.
 *
 * The child is this same file, started with `fork` (the test runner's `--import tsx` is
 * inherited); it is told apart by KEYSHARD_LINK_RELAY=1.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { TcpLink } from './tcp-link.ts';

type Op = { op: 'open'; count: number } | { op: 'target'; link: number; port: number } | { op: 'cut' | 'heal'; links: number[] } | { op: 'close' };
type Request = { id: number } & Op;
type Reply = { id: number; ports?: number[]; error?: string };

/** One link in the relay process: its port here, and what the relay does with it. */
export class RemoteLink {
  constructor(
    private readonly relay: LinkRelay,
    readonly index: number,
    readonly port: number,
  ) {}

  setTarget(port: number): Promise<void> {
    return this.relay.request({ op: 'target', link: this.index, port }).then(() => {});
  }
}

export class LinkRelay {
  #child: ChildProcess;
  #next = 1;
  #waiting = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();

  private constructor(child: ChildProcess) {
    this.#child = child;
    child.on('message', (m: Reply) => {
      const w = this.#waiting.get(m.id);
      this.#waiting.delete(m.id);
      if (m.error) w?.reject(new Error(`link relay: ${m.error}`));
      else w?.resolve(m);
    });
    child.on('exit', (code, signal) => {
      for (const w of this.#waiting.values()) w.reject(new Error(`link relay exited (${code ?? signal})`));
      this.#waiting.clear();
    });
  }

  static async start(): Promise<LinkRelay> {
    const child = fork(fileURLToPath(import.meta.url), [], { env: { ...process.env, KEYSHARD_LINK_RELAY: '1' }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
    return new LinkRelay(child);
  }

  /** Sends one request; resolves with the relay's answer. */
  request(r: Op): Promise<Reply> {
    const id = this.#next++;
    return new Promise<Reply>((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      this.#child.send({ ...r, id });
    });
  }

  /** `count` new links, each listening on a free port of 127.0.0.1; targets set later (setTarget). */
  async open(count: number): Promise<RemoteLink[]> {
    const { ports = [] } = await this.request({ op: 'open', count });
    const first = this.#opened;
    this.#opened += ports.length;
    return ports.map((port, i) => new RemoteLink(this, first + i, port));
  }
  #opened = 0;

  /** Partitions these links together (TcpLink.cut: nothing flows, nothing is closed). */
  async cut(links: RemoteLink[]): Promise<void> {
    await this.request({ op: 'cut', links: links.map((l) => l.index) });
  }

  async heal(links: RemoteLink[]): Promise<void> {
    await this.request({ op: 'heal', links: links.map((l) => l.index) });
  }

  /** Heals and closes every link, then ends the relay process. */
  async close(): Promise<void> {
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()));
    await this.request({ op: 'close' }).catch(() => {});
    await exited;
  }
}

/** The relay process: serves the parent's requests over IPC. */
async function serve(): Promise<void> {
  const links: TcpLink[] = [];
  process.on('message', async (r: Request) => {
    const reply = (m: Omit<Reply, 'id'>) => process.send!({ id: r.id, ...m });
    try {
      if (r.op === 'open') {
        const opened = await Promise.all(Array.from({ length: r.count }, () => TcpLink.open()));
        links.push(...opened);
        reply({ ports: opened.map((l) => l.port) });
      } else if (r.op === 'target') {
        links[r.link]!.target = r.port;
        reply({});
      } else if (r.op === 'cut' || r.op === 'heal') {
        for (const i of r.links) links[i]![r.op]();
        reply({});
      } else {
        for (const l of links) l.heal();
        await Promise.all(links.map((l) => l.close()));
        reply({});
        process.disconnect();
        process.exit(0);
      }
    } catch (e) {
      reply({ error: (e as Error).message });
    }
  });
  process.on('disconnect', () => process.exit(0)); // the parent went away
}

if (process.env.KEYSHARD_LINK_RELAY === '1') void serve();
