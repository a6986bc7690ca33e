'use client';
// One pgcast connection for the whole app, made in the browser (never during server
// rendering); every useChannel below shares it. Until it exists the hooks do nothing.
import { PgcastClient } from 'pgcast-client';
import { PgcastProvider } from 'pgcast-client/react';
import { type ReactNode, useEffect, useState } from 'react';

async function fetchToken(): Promise<string> {
  const response = await fetch('/api/pgcast-token', { method: 'POST' });
  if (!response.ok) throw new Error(`pgcast token: HTTP ${response.status}`);
  return response.text();
}

export function PgcastRoot({ children }: { children: ReactNode }) {
  const [client, setClient] = useState<PgcastClient | null>(null);
  useEffect(() => {
    const created = new PgcastClient({
      url: process.env.NEXT_PUBLIC_PGCAST_URL ?? window.location.origin,
      token: fetchToken, // asked again on every reconnect and before the token expires
    });
    setClient(created);
    return () => created.close();
  }, []);
  return <PgcastProvider client={client}>{children}</PgcastProvider>;
}
