// @peculiar/x509 with the Reflect metadata polyfill its dependency injection (tsyringe) needs,
// loaded first. Every pki/ module imports x509 from here, never from the package directly.
import 'reflect-metadata';
export * from '@peculiar/x509';
