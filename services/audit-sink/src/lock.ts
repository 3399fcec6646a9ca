/** Exclusive ownership of an audit data dir (node has no flock; a pid file is enough here). */
import fs from 'node:fs';
import path from 'node:path';
import { KeyshardError } from '@keyshard/errors';

const lockedHere = new Set<string>();

/**
 * One writer per data dir: a second sink appending to the same file would fork the chain.
 * `LOCK` holds the owner's pid; a lock whose owner is dead (e.g. SIGKILL) is taken over.
 */
export function lockDir(dir: string): () => void {
  const lock = path.resolve(dir, 'LOCK');
  if (lockedHere.has(lock)) throw new KeyshardError('FAILED_PRECONDITION', `audit data dir ${dir} is already open`);
  for (let attempt = 0; ; attempt++) {
    try {
      fs.writeFileSync(lock, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
      const pid = Number.parseInt(fs.readFileSync(lock, 'utf8'), 10);
      if (pid > 0 && pid !== process.pid && isAlive(pid)) {
        throw new KeyshardError('FAILED_PRECONDITION', `audit data dir ${dir} is in use by process ${pid}`);
      }
      fs.rmSync(lock, { force: true });
    }
  }
  lockedHere.add(lock);
  return () => {
    lockedHere.delete(lock);
    fs.rmSync(lock, { force: true });
  };
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
