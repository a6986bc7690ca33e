// The React hook ships in the npm package (`import { useChannel } from 'pgcast-client/react'`);
// this file re-exports its source so that the examples here run without npm or a build step.
export { PgcastContext, PgcastProvider, useChannel, useConnectionState } from '../../clients/js/src/react.js';
