// Errors of config/: one base class with a stable code, one subclass per way a config can be wrong.

/** One bad field: where it is (`listeners[0].port`) and what was expected there. */
export interface ConfigIssue { path: string; message: string }

/** Base class of every configuration error; `code` is stable, the message is for people. */
export class ConfigError extends Error {
  constructor(message: string, readonly code: string = 'CONFIG_ERR') {
    super(message);
    this.name = 'ConfigError';
  }
}

/** The config file itself cannot be read. */
export class ConfigFileError extends ConfigError {
  constructor(readonly file: string, reason: string) {
    super(`${file}: ${reason}`, 'CONFIG_ERR_FILE');
    this.name = 'ConfigFileError';
  }
}

/** The file is not valid YAML; the message carries line and column. */
export class ConfigSyntaxError extends ConfigError {
  constructor(readonly file: string, detail: string) {
    super(`${file}: not valid YAML: ${detail}`, 'CONFIG_ERR_SYNTAX');
    this.name = 'ConfigSyntaxError';
  }
}

/** The YAML parsed but fields are wrong; `issues` lists every one, the message leads with the first. */
export class ConfigInvalidError extends ConfigError {
  constructor(readonly issues: ConfigIssue[], source?: string) {
    const first = issues[0] ? `${issues[0].path}: ${issues[0].message}` : 'invalid configuration';
    const more = issues.length > 1 ? ` (and ${issues.length - 1} more problem${issues.length > 2 ? 's' : ''})` : '';
    super(`${source ? `${source}: ` : ''}${first}${more}`, 'CONFIG_ERR_INVALID');
    this.name = 'ConfigInvalidError';
  }
}
