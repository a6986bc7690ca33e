import type { ReactNode } from 'react';

import { PgcastRoot } from './PgcastRoot';

export const metadata = { title: 'pgcast + Next.js' };

export default function RootLayout({ children }: { children: ReactNode }) {
  return (
    <html lang="en">
      <body>
        <PgcastRoot>{children}</PgcastRoot>
      </body>
    </html>
  );
}
