// Who is logged in. Replace this with your auth: NextAuth's `auth()`, Clerk's `auth()`,
// your own session lookup. The placeholder trusts a `demo-user` cookie so that the example
// runs as is; a cookie anyone can set is not authentication.
import { cookies } from 'next/headers';

export interface User {
  id: string;
}

export async function currentUser(): Promise<User | null> {
  const id = (await cookies()).get('demo-user')?.value;
  return id ? { id } : null;
}
