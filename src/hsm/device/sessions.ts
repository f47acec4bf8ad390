// Login sessions of one HSM: which session ids are live, and for whom. Ending a session
// destroys its session keys (through the callback), as CloudHSM does at logout.
import { randomBytes } from 'node:crypto';
import { NotLoggedInError } from './errors.js';
import type { Role, Session } from './types.js';

/** The live sessions of one HSM. */
export class SessionTable {
  private readonly live = new Map<string, Session>();

  constructor(private readonly onEnd: (sessionId: string) => void) {}

  /** Starts a session for a user. */
  start(user: string, role: Role): Session {
    const s: Session = Object.freeze({ id: randomBytes(16).toString('hex'), user, role });
    this.live.set(s.id, s);
    return s;
  }

  /** The live session matching a caller's session object; a stale or forged one is refused. */
  resolve(session: Session): Session {
    const s = session && typeof session.id === 'string' ? this.live.get(session.id) : undefined;
    if (!s || s.user !== session.user) throw new NotLoggedInError();
    return s;
  }

  /** Replaces a session's role (PRECO → CO after the password change). */
  promote(s: Session, role: Role): Session {
    const next: Session = Object.freeze({ id: s.id, user: s.user, role });
    this.live.set(s.id, next);
    return next;
  }

  /** Ends one session. */
  end(id: string): void {
    if (this.live.delete(id)) this.onEnd(id);
  }

  /** Ends every session of a user (deleted user). */
  endUser(user: string): void {
    for (const s of [...this.live.values()]) if (s.user === user) this.end(s.id);
  }

  /** Ends sessions whose user is gone or whose role changed (after a replicated user table). */
  reconcile(roleOf: (user: string) => Role | undefined): void {
    for (const s of [...this.live.values()]) if (roleOf(s.user) !== s.role) this.end(s.id);
  }

  /** Ends every session (close). */
  endAll(): void {
    for (const id of [...this.live.keys()]) this.end(id);
  }
}
