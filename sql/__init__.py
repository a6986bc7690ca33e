"""pgcast SQL migrations, shipped with the package so pgcast-migrate finds them."""
