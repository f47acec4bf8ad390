// The appliance's quorum operations (protocol/quorum.ts): decodes each request's JSON body,
// calls the device, and returns the value to answer with. Kept beside node-ops.ts, which
// dispatches the quorum opcodes here.
import { InvalidArgumentError, type Hsm, type Session } from './device/index.js';
import { Op, type QuorumService } from './protocol/index.js';

export { isQuorumOp } from './protocol/index.js';

type Json = Record<string, unknown>;

function str(o: Json, name: string): string {
  const v = o[name];
  if (typeof v !== 'string' || v.length === 0) throw new InvalidArgumentError(`request field ${name} must be a non-empty string`);
  return v;
}
function bytes(o: Json, name: string): Buffer {
  const v = o[name];
  if (!Buffer.isBuffer(v)) throw new InvalidArgumentError(`request field ${name} must be bytes`);
  return v;
}
function int(o: Json, name: string, optional = false): number | undefined {
  const v = o[name];
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v)) throw new InvalidArgumentError(`request field ${name} must be an integer`);
  return v;
}

/** Runs one quorum request; the answer is plain data for the JSON body. */
export async function handleQuorumOp(device: Hsm, s: Session, opcode: number, o: Json): Promise<unknown> {
  switch (opcode) {
    case Op.QUORUM_REGISTER_KEY: return device.registerQuorumKey(s, str(o, 'publicKey'), bytes(o, 'proof'));
    case Op.QUORUM_SET_M: return device.setQuorumM(s, str(o, 'service') as QuorumService, int(o, 'm') as number);
    case Op.QUORUM_TOKEN_GET: return device.getQuorumToken(s, str(o, 'service') as QuorumService, int(o, 'ttlSeconds', true));
    case Op.QUORUM_TOKEN_APPROVE: return device.approveQuorumToken(s, str(o, 'tokenId'), str(o, 'approver'), bytes(o, 'signature'));
    case Op.QUORUM_TOKEN_STATUS: return device.quorumTokenStatus(s, str(o, 'tokenId'));
    case Op.QUORUM_STATUS: return device.quorumStatus(s);
    case Op.QUORUM_TOKEN_EXPORT: return { masked: device.exportQuorumToken(s, str(o, 'tokenId')) };
    case Op.QUORUM_TOKEN_IMPORT: return device.importQuorumToken(s, bytes(o, 'masked'));
    default: throw new InvalidArgumentError(`unknown quorum operation 0x${opcode.toString(16)}`);
  }
}
