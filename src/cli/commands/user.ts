// `hsmproxy user …`: the crypto officer manages users (CloudHSM roles CO, CU, AU).
// Credentials from HSMPROXY_PIN; passwords being set from HSMPROXY_NEW_PASSWORD (or prompts).
import type { Command } from 'commander';
import { readNewPassword, withHsm, type HsmCommandOptions } from '../hsm-session.js';
import { UsageError, output } from '../run.js';

const ROLES = ['CU', 'CO', 'AU'] as const;

function common(c: Command): Command {
  return c.option('--dir <dir>', 'cluster directory (default $HSMPROXY_DIR or ./data)')
    .option('--hsm <id>', 'HSM id from cluster.json (default: the first)')
    .option('--json', 'print one JSON document');
}

/** Registers the `user` command group. */
export function register(program: Command): void {
  const user = program.commands.find((c) => c.name() === 'user') ?? program.command('user').description('HSM users (the crypto officer manages them; login from HSMPROXY_PIN)');

  common(user.command('create').description('create a user; its password comes from HSMPROXY_NEW_PASSWORD or a prompt'))
    .requiredOption('--name <name>', 'user name')
    .option('--role <role>', `role: ${ROLES.join('|')} (crypto user, crypto officer, appliance user)`, 'CU')
    .action(async (opts: HsmCommandOptions & { name: string; role: string }) => {
      const role = opts.role.toUpperCase();
      if (!(ROLES as readonly string[]).includes(role)) throw new UsageError(`--role must be one of ${ROLES.join(', ')}`);
      const password = await readNewPassword(`user ${opts.name}`);
      const u = await withHsm(opts, (c) => c.createUser(opts.name, role as (typeof ROLES)[number], password));
      output(opts, u, () => process.stdout.write(`created ${u.role} ${u.name}\n`));
    });

  common(user.command('delete').description('delete a user (refused while it owns keys)'))
    .requiredOption('--name <name>', 'user name')
    .action(async (opts: HsmCommandOptions & { name: string }) => {
      await withHsm(opts, (c) => c.deleteUser(opts.name));
      output(opts, { deleted: opts.name }, () => process.stdout.write(`deleted user ${opts.name}\n`));
    });

  common(user.command('list').description('list users'))
    .action(async (opts: HsmCommandOptions) => {
      const users = await withHsm(opts, (c) => c.listUsers());
      output(opts, users, () => {
        for (const u of users) process.stdout.write(`${u.name.padEnd(24)} ${u.role.padEnd(5)}${u.locked ? ' locked' : ''}${u.failedLogins > 0 ? ` (${u.failedLogins} failed logins)` : ''}\n`);
      });
    });

  common(user.command('passwd').description("change your own password, or (CO) set another user's with --name; new password from HSMPROXY_NEW_PASSWORD or a prompt"))
    .option('--name <name>', "the user whose password a crypto officer sets (default: yourself)")
    .action(async (opts: HsmCommandOptions & { name?: string }) => {
      const password = await readNewPassword(opts.name ? `user ${opts.name}` : 'yourself');
      const who = await withHsm(opts, async (c) => {
        if (opts.name === undefined || opts.name === c.user?.user) return (await c.changePassword(password)).user;
        await c.resetPassword(opts.name, password);
        return opts.name;
      });
      output(opts, { user: who, changed: true }, () => process.stdout.write(`password of ${who} changed\n`));
    });

  common(user.command('unlock').description('clear a user\'s lockout after too many failed logins'))
    .requiredOption('--name <name>', 'user name')
    .action(async (opts: HsmCommandOptions & { name: string }) => {
      await withHsm(opts, (c) => c.unlockUser(opts.name));
      output(opts, { unlocked: opts.name }, () => process.stdout.write(`unlocked ${opts.name}\n`));
    });
}
