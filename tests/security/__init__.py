"""The security suite: each rule of the README's "Security model", probed as an attacker would
probe it against real servers: the attack is refused with the right status, the legitimate
action still works."""
