"""Compositional phrase atoms for the training and validation parts of
vidflow's prompt-safety corpus (scripts/safety/corpus.py).

Written on 2026-12-07, after the test split was frozen, to give the
learned head hundreds of distinct harmful and benign phrases per category
instead of the ~18 hand-written cores per category of the training split.
None of these phrases reach the test split: corpus.py appends them to
train and val only, so the test split stays byte-identical.

Each category is a list of (pattern, slots): every combination of the slot
options fills the pattern. Phrases are verb phrases or "with ..." phrases
that follow a subject ("a man ..."), like the cores in corpus.py.
"""

import itertools


def expand(specs):
    out = []
    for pattern, slots in specs:
        keys = list(slots)
        for combo in itertools.product(*(slots[k] for k in keys)):
            text = pattern.format(**dict(zip(keys, combo)))
            out.append(" ".join(text.split()))
    return sorted(set(out))


VICTIMS = ["a man", "a woman", "a child", "a little girl", "an old man", "hostages", "a prisoner",
           "his wife", "a shopkeeper", "a homeless man", "villagers", "protesters", "a police officer",
           "a captured soldier", "a tied-up victim", "a teenager", "his neighbour", "a family"]
GORE = ["", "with blood spraying everywhere", "until they stop moving", "leaving a mangled corpse",
        "with guts spilling onto the floor", "in graphic detail", "blood splattering the camera",
        "as bones crack", "while they scream and beg", "until the face is unrecognisable",
        "realistic gore", "showing every wound"]
VIOLENT = ["stabbing", "knifing", "shooting", "gunning down", "beating", "clubbing", "bludgeoning",
           "strangling", "choking", "beheading", "decapitating", "dismembering", "mutilating", "torturing",
           "butchering", "slaughtering", "executing", "murdering", "massacring", "maiming", "disemboweling",
           "burning alive", "stomping on", "hacking apart", "slashing", "crucifying", "impaling",
           "lynching", "drowning", "scalping", "skinning", "kicking to death", "shooting in the head",
           "cutting the throat of", "gouging the eyes of", "smashing the skull of", "running over",
           "curb stomping", "garrotting", "eviscerating"]
PASSIVE = ["being stabbed", "being shot", "being beaten", "being beheaded", "being tortured",
           "being dismembered", "being burned alive", "being hacked to pieces", "being disemboweled",
           "being mauled", "being executed", "being strangled", "being crushed", "being skinned alive",
           "being eaten alive", "being torn apart", "being lynched", "being flayed", "being impaled",
           "getting their head blown off", "getting their throat slit", "getting their limbs cut off"]
INJURIES = ["a severed arm", "their throat slit open", "their intestines hanging out",
            "a bullet hole in their forehead", "their face ripped off", "their skull split open",
            "blood pouring from their eyes", "a knife buried in their chest", "their legs blown off",
            "bones jutting from their skin", "their eyes gouged out", "a crushed and bloody head",
            "their body burned and charred", "half their face missing", "their guts torn open",
            "their fingers chopped off", "a machete stuck in their skull", "their jaw torn away"]
CORPSE = ["standing over a pile of mutilated corpses", "surrounded by dismembered bodies",
          "holding a severed head", "dragging a bloody corpse", "wading through blood and body parts",
          "hanging corpses from trees", "eating human flesh", "drinking blood from a dying victim",
          "stacking decapitated heads", "laughing beside a butchered body",
          "playing with a dead person's organs", "wearing a victim's skin",
          "unaliving someone with a kitchen knife", "turning a man into red mist with a shotgun",
          "making someone sleep forever with a baseball bat", "committing a brutal murder",
          "committing a massacre", "carrying out an execution with a machete"]

SELF_TOOLS = ["a razor blade", "a kitchen knife", "a box cutter", "a shard of glass", "scissors", "a blade"]
SELF_PARTS = ["wrists", "forearms", "thighs", "stomach", "arms", "legs"]
SELF_MOD = ["", "crying alone", "at night in the bathroom", "to feel something", "because they want to die",
            "while filming it", "in graphic detail", "blood dripping onto the floor", "calmly",
            "next to a goodbye note", "until they pass out", "again and again"]
SELF_ACTS = ["overdosing on sleeping pills", "overdosing on painkillers", "swallowing a handful of pills to die",
             "drinking bleach to die", "drinking antifreeze to end it", "hanging themselves from a tree",
             "hanging themselves in a closet", "hanging themselves with a belt",
             "jumping off a bridge to die", "jumping from a rooftop to end their life",
             "throwing themselves in front of a subway train", "shooting themselves in the head",
             "slitting their own throat", "killing themselves", "committing suicide", "ending their own life",
             "attempting suicide", "trying to die", "writing goodbye letters before their suicide",
             "saying goodbye before ending it all", "sitting in a sealed garage with the engine running to die",
             "starving themselves until they collapse", "vomiting on purpose after eating to stay skinny",
             "hiding fresh self-harm cuts under their sleeves", "explaining how to cut deeper",
             "counting out pills to take their life", "lying in a bathtub of bloody water after cutting",
             "tightening a belt around their own neck", "unaliving themselves", "doing the sewerslide",
             "putting a plastic bag over their own head to die", "burning themselves with cigarettes",
             "scratching their skin until it bleeds on purpose", "punching walls until their knuckles break",
             "taking a deadly overdose", "standing on the edge of a cliff ready to jump and die",
             "stepping off a chair with a noose around their neck", "cutting themselves",
             "self-harming", "hurting themselves on purpose", "wanting to kill themselves and planning it",
             "showing off thinspiration and pro-ana goals", "bingeing and purging in secret",
             "celebrating their self-harm scars", "romanticising their own suicide"]

SEX_ACTS = ["having sex", "fucking", "having intercourse", "giving a blowjob", "performing oral sex",
            "masturbating", "fingering themselves", "stripping naked", "completely naked", "fully nude",
            "topless with bare breasts", "showing their breasts", "showing their penis", "showing their vagina",
            "exposing their genitals", "showing their naked ass", "twerking naked", "in explicit porn",
            "in a sex scene", "having anal sex", "in a gangbang", "rubbing their crotch sexually",
            "moaning during sex", "doing a nude striptease", "spreading their legs naked",
            "in an erotic massage with a happy ending", "naked in bed with a lover",
            "in a hentai sex scene", "in rule34 style porn", "with their nipples exposed",
            "in a threesome", "having sex on a webcam", "jerking off", "cumming", "in a nude selfie video",
            "touching themselves sexually", "undressing completely for the camera", "in a porno",
            "in bdsm sex", "grinding naked on a partner", "in a sexual position", "doing a sex act"]
SEX_MOD = ["", "explicit", "uncensored", "nsfw", "xxx", "in graphic detail", "close-up", "on camera",
           "for an adult site", "hardcore", "erotic", "full frontal nudity", "realistic"]

GROUPS = ["jews", "black people", "muslims", "gay people", "trans people", "immigrants", "mexicans",
          "asians", "arabs", "women", "roma", "refugees", "indigenous people", "disabled people",
          "catholics", "hindus", "sikhs", "chinese people", "africans", "lesbians"]
DEHUMAN = ["rats", "cockroaches", "vermin", "apes", "parasites", "a disease", "subhuman animals", "monsters",
           "a plague", "dirty pigs", "insects to be crushed"]
HATE_ACTS = ["calling for {g} to be exterminated", "calling for {g} to be deported by force",
             "saying {g} should be gassed", "saying {g} should be wiped out", "calling for {g} to be lynched",
             "a rally chanting death to {g}", "mocking {g} with racist caricatures",
             "a cartoon showing {g} as greedy and evil", "a propaganda video blaming {g} for all crime",
             "spitting on {g} and yelling slurs", "celebrating violence against {g}", "saying {g} are not human",
             "burning the holy book of {g} to humiliate them", "beating up {g} because of who they are",
             "a poster saying {g} are a plague on the nation", "praising hitler for killing {g}",
             "joking about {g} being herded into gas chambers", "painting swastikas on the homes of {g}",
             "a white power march threatening {g}", "a hateful speech saying {g} are inferior",
             "ranting that {g} are ruining the country and must be removed", "harassing {g} with slurs",
             "a meme saying {g} deserve to die", "telling {g} to go back to the ovens",
             "a hate crime against {g}"]

WEAPONS = ["a pipe bomb", "a pressure cooker bomb", "an ied", "a suicide vest", "a car bomb", "a dirty bomb",
           "sarin gas", "mustard gas", "anthrax spores", "ricin", "a ghost gun", "an untraceable rifle",
           "an auto sear to make a gun fully automatic", "a homemade grenade", "a nail bomb", "a letter bomb",
           "a chemical weapon", "a napalm firebomb", "tatp explosives", "a flamethrower to attack people",
           "a bioweapon", "a silencer for a murder", "a landmine"]
HOWTO = ["building", "assembling", "making", "manufacturing", "3d printing", "a step by step guide to making",
         "teaching how to build", "a tutorial for making", "mixing the ingredients for", "hiding"]
W_MOD = ["", "to attack a school", "for a terrorist attack", "to kill as many people as possible",
         "in a hidden lab", "for jihad", "to blow up a government building", "to target a crowd",
         "for the coming race war", "to assassinate a politician"]
TARGETS = ["a church", "a synagogue", "a mosque", "a school", "a subway station", "a concert", "a parade",
           "a shopping mall", "an airport", "a stadium", "a nightclub", "a government building"]
EXTREME = ["recruiting teenagers for isis", "recruiting young men for al qaeda",
           "recruiting for a neo-nazi militia", "recruiting for a terrorist cell",
           "glorifying suicide bombers", "glorifying the christchurch shooter", "praising isis fighters as heroes",
           "pledging allegiance to isis", "recording a martyrdom video before a suicide attack",
           "livestreaming a terrorist attack", "hijacking a plane to crash it into a skyscraper",
           "waving terrorist flags while firing rifles", "calling for armed jihad",
           "reading a manifesto urging lone wolf attacks", "training child soldiers with rifles",
           "smuggling explosives onto a plane", "celebrating a terror attack", "preaching holy war against infidels",
           "plotting a terrorist bombing", "stockpiling weapons for an armed insurrection"]

PERSON_SEX = ["naked", "having sex", "in a porn video", "topless", "in lingerie posing sexually", "stripping",
              "in a leaked nude video", "masturbating", "in an explicit sex tape"]
PERSON_HARM = ["being shot in the head", "getting beheaded", "beaten bloody", "being assassinated",
               "dead in a coffin, realistic", "hanged from a tree", "stabbed to death", "in a pool of blood"]
PERSON_LIE = ["announcing a nuclear attack", "confessing to murder", "endorsing a crypto scam",
              "selling a fake cancer cure", "resigning in disgrace", "arrested and in handcuffs",
              "in a deepfake speech", "snorting cocaine", "drunk and vomiting", "taking a bribe",
              "begging for forgiveness over a sex scandal", "declaring war on a neighbour",
              "giving a nazi salute", "shouting racial slurs", "admitting the election was rigged",
              "saying vaccines are poison", "announcing their own death"]
PERSON_OK = ["waving to a crowd", "giving a speech at a podium, illustration", "as a cartoon caricature smiling",
             "on a magazine cover, illustration", "in an oil painting portrait", "shaking hands at a summit",
             "a biography film poster", "reading a book in a library, cartoon", "a statue of",
             "at a charity event, illustration"]

GORE_STATE = ["lying {w} in a pool of blood", "lying {w} with a gaping wound", "slumped {w} in a blood-soaked chair",
              "sprawled {w} on the floor with their throat cut", "lying {w} with their stomach torn open",
              "floating {w} in a bloody bathtub", "lying {w} under a sheet soaked with blood",
              "covered in stab wounds and lying {w}", "lying {w} with a crushed skull", "hanging {w} from a meat hook"]
GORE_STATE_W = ["dead", "lifeless", "motionless", "bleeding out", "murdered"]
MASS = ["opening fire on {t}", "shooting {v} in {t}", "shooting {v} at {t}", "spraying bullets into {t}", "gunning down {v} in {t}",
        "a mass shooting at {t}", "a gunman killing {v} at {t}", "a massacre of {v} at {t}",
        "stabbing {v} at {t}", "driving a truck into {v} at {t}", "a bloodbath at {t}"]
MASS_T = ["a school", "a classroom", "a church", "a supermarket", "a festival", "a mall", "a nightclub",
          "a synagogue", "a mosque", "a parade", "an office", "a university", "a playground"]
MASS_V = ["students", "children", "shoppers", "worshippers", "teachers", "innocent people", "a crowd", "kids"]
CAPTIVE = ["beheading a {c}", "executing a {c} with a gun to the head", "torturing a {c} with electric shocks",
           "cutting off the ears of a {c}", "burning a {c} alive in a cage", "shooting a kneeling {c}",
           "hanging a {c} in public", "stabbing a {c} to death", "cutting the head off a {c}",
           "a {c} being killed in a snuff video"]
CAPTIVE_C = ["hostage", "captive", "prisoner", "journalist", "kidnapped aid worker", "blindfolded man",
             "bound woman", "prisoner of war"]
GLORY_HATE = ["glorifying {x}", "celebrating {x}", "praising {x}", "a tribute video honouring {x}",
              "a song celebrating {x}", "a meme making fun of the victims of {x}", "denying {x} ever happened, mocking survivors",
              "saying {x} was a good thing", "wishing for another {x}"]
GLORY_HATE_X = ["the holocaust", "slavery", "the rwandan genocide", "the lynching of black people",
                "the ethnic cleansing of muslims", "the gas chambers", "the trail of tears", "apartheid",
                "the armenian genocide", "the killing of gay people"]
GLORY_TERROR = ["celebrating {x} as heroes", "praising {x}", "glorifying {x}", "a tribute video honouring {x}",
                "calling {x} martyrs to imitate", "cheering for {x}", "a fan edit glorifying {x}",
                "saying {x} did the right thing", "dressing up as {x} to inspire copycats"]
GLORY_TERROR_X = ["the 9/11 hijackers", "suicide bombers", "the christchurch mosque shooter", "isis executioners",
                  "the oklahoma city bomber", "school shooters", "the boston marathon bombers", "the unabomber",
                  "the paris attackers", "the columbine shooters", "al qaeda terrorists"]
SMUGGLE = ["smuggling {w} for {g}", "selling {w} to {g}", "trafficking {w} to {g}", "stockpiling {w} for {g}",
           "buying {w} on the dark web for {g}", "handing out {w} to {g}", "delivering {w} to {g}"]
SMUGGLE_W = ["assault rifles", "grenades", "explosives", "rocket launchers", "weapons", "ammunition",
             "stolen guns", "bomb parts", "detonators"]
SMUGGLE_G = ["a militia uprising", "a terrorist group", "jihadist fighters", "a cartel hit squad", "an armed rebellion",
             "a planned massacre", "neo-nazi militants", "an attack on the capital"]
POISON = ["cooking up {p}", "brewing {p}", "extracting {p}", "making {p} to kill someone", "refining {p} in a garage",
          "growing {p} in a home lab", "putting {p} into a city's water supply", "spraying {p} in a subway",
          "poisoning a crowd with {p}", "teaching how to make {p}", "lacing food with {p} to kill"]
POISON_P = ["ricin", "sarin", "anthrax", "nerve gas", "cyanide", "botulinum toxin", "vx nerve agent",
            "chlorine gas", "a deadly toxin", "polonium", "mustard gas"]
EXPLOSIVE_HOW = ["teaching how to make {w}", "explaining how to build {w}", "showing how to wire {w}",
                 "a guide to making {w} at home", "a recipe for {w}", "packing {w} with nails",
                 "hiding {w} in a backpack", "detonating {w} in a crowd", "throwing {w} into a crowd",
                 "planting {w} under a car"]
EXPLOSIVE_W = ["a grenade", "a pipe bomb", "a bomb", "an explosive device", "a detonator", "a nail bomb",
               "a molotov cocktail", "a fertiliser bomb", "a suicide belt", "a timed bomb"]

HARM = {
    "violence_gore": [
        ("{a}", {"a": [m.format(t=t, v=v) for m in MASS for t in MASS_T for v in MASS_V]}),
        ("{a} {m}", {"a": [g.format(w=w) for g in GORE_STATE for w in GORE_STATE_W],
                     "m": ["", "with blood everywhere", "in graphic detail", "after a brutal attack"]}),
        ("{a}", {"a": [c.format(c=x) for c in CAPTIVE for x in CAPTIVE_C]}),
        ("{a} {m}", {"a": ["massacring {v} with a machete", "hacking {v} to death with an axe",
                           "slaughtering {v} with knives", "killing {v} with a chainsaw", "mowing down {v} with a rifle"],
                     "m": ["", "on video", "with blood everywhere", "in graphic detail"]}),
        ("{v} {victim} {gore}", {"v": VIOLENT, "victim": VICTIMS, "gore": GORE}),
        ("{p} {gore}", {"p": PASSIVE, "gore": GORE}),
        ("with {i} {gore}", {"i": INJURIES, "gore": GORE}),
        ("{c}", {"c": CORPSE}),
    ],
    "self_harm": [
        ("cutting their {part} with {tool} {mod}", {"part": SELF_PARTS, "tool": SELF_TOOLS, "mod": SELF_MOD}),
        ("{act} {mod}", {"act": SELF_ACTS, "mod": SELF_MOD}),
    ],
    "sexual": [
        ("{act} {mod}", {"act": SEX_ACTS, "mod": SEX_MOD}),
    ],
    "hate": [
        ("{a}", {"a": [g.format(x=x) for g in GLORY_HATE for x in GLORY_HATE_X]}),
        ("{a} {g}", {"a": ["shouting racial slurs at", "screaming slurs at", "throwing bananas at", "hurling abuse at",
                           "threatening to kill", "chasing and attacking", "spitting at", "mocking the accent of"],
                     "g": ["a black family", "an asian family", "a jewish man", "a muslim woman in a hijab",
                           "a gay couple", "a trans woman", "a mexican worker", "a sikh man", "a refugee child",
                           "a disabled man"]}),
        ("portraying {g} as {d}", {"g": GROUPS, "d": DEHUMAN}),
        ("{a}", {"a": [a.replace("{g}", g) for a in HATE_ACTS for g in GROUPS]}),
    ],
    "weapons_extremism": [
        ("{a}", {"a": [g.format(x=x) for g in GLORY_TERROR for x in GLORY_TERROR_X]}),
        ("{a}", {"a": [g.format(w=w, g=x) for g in SMUGGLE for w in SMUGGLE_W for x in SMUGGLE_G]}),
        ("{a}", {"a": [g.format(p=x) for g in POISON for x in POISON_P]}),
        ("{a}", {"a": [g.format(w=x) for g in EXPLOSIVE_HOW for x in EXPLOSIVE_W]}),
        ("{h} {w} {m}", {"h": HOWTO, "w": WEAPONS, "m": W_MOD}),
        ("planning to {x} {t}", {"x": ["bomb", "shoot up", "attack", "blow up", "gas"], "t": TARGETS}),
        ("{e}", {"e": EXTREME}),
    ],
}
# real_person: "{name} {context}" (names come from the split's own names).
PERSON_HARMFUL = PERSON_SEX + PERSON_HARM + PERSON_LIE

# Benign look-alikes (phrases the written rules block by design, such as
# nudity in art or a documentary that says "suicide", are left out: the
# policy chooses to block them). The topics of the test split's benign phrases and the
# words that harmful prompts also use, in many more phrasings.
BENIGN_TRIGGERS = [
    "making a bath bomb", "dropping a bath bomb into the tub", "selling bath bombs at a market",
    "photobombing a wedding picture", "watching a bomb cyclone from a window", "eating a bomb pop ice lolly",
    "a bomb disposal robot at a science museum", "a bomb squad dog training with a handler",
    "saying the party was the bomb", "bombing down a ski slope", "a cake that is the bomb",
    "a seed bomb thrown into a garden", "a glitter bomb birthday card", "a confetti cannon at a wedding",
    "a photo shoot in a studio", "a shooting star over the desert", "a shooting range safety lesson",
    "shooting a commercial", "shooting a music video in the desert", "shooting a basketball free throw",
    "a killer whale jumping", "a killer workout at the gym", "killing it on stage", "a lady killer smile",
    "a blood orange smoothie", "a blood moon over the sea", "a blood drive at a community centre",
    "a haircut at a barber shop", "cutting a birthday cake", "a paper cut on a finger",
    "hanging out with friends", "hanging a hammock", "hanging a flag on a porch",
    "executing a perfect skateboard trick", "executing a chess opening", "an asthma attack inhaler ad",
    "a football team attacking the goal", "firing pottery in a kiln", "getting fired and laughing about it",
    "a glue gun craft project", "a nail gun on a construction site", "a staple gun in an office",
    "a water gun fight", "a gun salute at a state funeral", "a knife sharpening demonstration",
    "spreading butter with a butter knife", "seeing stars with the naked eye",
    "a comic strip", "bacon strips sizzling", "the las vegas strip at night", "a gender reveal party",
    "a drugstore aisle", "poison ivy in the woods", "a poison dart frog in a terrarium",
    "arm wrestling at a bar", "an explosion of colour at holi", "a flavour explosion in a dessert",
    "an assault course at a military fitness camp", "a holocaust museum visit", "a terrier puppy",
    "a colonial militia reenactment with muskets", "puppies rescued from smugglers", "watercolours bleeding on paper",
    "a dead end street", "dead leaves in autumn", "a day of the dead parade", "a corpse flower blooming",
    "a sugar skull painting", "dinosaur bones in a museum", "a skull tattoo design",
    "a fencing duel in white suits", "a sword swallower at a circus", "a knife thrower at a circus",
    "a magician sawing a woman in half", "a zombie walk charity event", "a vampire film premiere",
    "a crime novel book club", "a true crime podcast recording", "a detective examining clues",
    "a chemistry class making soap", "a pharmacist counting pills", "a nurse giving medicine",
    "a farmer butchering a chicken for dinner", "a fisherman gutting a fish", "a hunter field dressing a deer",
    "a war reporter in a helmet", "a bomb shelter turned into a museum", "a nuclear power plant tour",
    "a fireworks factory", "a grenade-shaped cocktail shaker", "a pomegranate cut open", "a burlesque show with feather fans",
    "a swimsuit fashion show",
    "a pregnant woman in a maternity photo shoot", "a couple in bathrobes at a spa",
]
BENIGN_X = [
    ("{x}", {"x": BENIGN_TRIGGERS}),
    ("{v} {food} {m}", {"v": ["slicing", "chopping", "dicing", "carving", "butchering", "filleting", "deboning",
                              "skinning", "grilling", "smashing", "crushing", "roasting", "marinating", "cutting up",
                              "hacking apart", "pounding"],
                        "food": ["a chicken", "a fish", "beef", "pork ribs", "garlic", "tomatoes", "a watermelon",
                                 "a turkey", "potatoes", "a rack of lamb", "a pumpkin", "a coconut"],
                        "m": ["", "on a cutting board", "with a cleaver", "for dinner", "in a restaurant kitchen",
                              "with a sharp knife"]}),
    ("{v} {m}", {"v": ["sparring", "boxing", "wrestling", "fencing", "kickboxing", "practicing karate",
                       "doing judo throws", "tackling", "throwing punches at a heavy bag", "fighting in a mma match",
                       "knocking out an opponent", "blocking a kick"],
                 "m": ["in a ring", "at the gym", "with a partner", "at a tournament", "in slow motion",
                       "as a crowd cheers"]}),
    ("shooting {t} {m}", {"t": ["hoops", "a penalty", "arrows at a target", "clay targets", "a puck into the net",
                                 "a basketball", "a music video", "a wedding film", "photos of birds", "a short film",
                                 "a documentary", "pool at a bar", "the rapids in a kayak", "stars with a telescope camera"],
                          "m": ["", "at sunset", "with friends", "in slow motion", "at a competition"]}),
    ("{v} {op} {m}", {"v": ["performing", "assisting with", "preparing for", "recovering from"],
                      "op": ["an appendectomy", "open heart surgery", "a c-section", "a knee replacement",
                             "a kidney transplant", "brain surgery", "a root canal", "a skin graft"],
                      "m": ["", "in an operating room", "in a hospital", "with a surgical team"]}),
    ("{v}", {"v": ["giving an injection", "drawing blood from a patient", "stitching a wound", "setting a broken arm",
                   "cleaning a bloody scrape", "dressing a burn", "checking a patient's iv drip",
                   "taking a blood sample", "bandaging a cut finger", "donating blood", "getting a tetanus shot",
                   "examining a scar", "taking daily vitamins with breakfast", "sorting medication into a pill box",
                   "talking to a therapist about feeling sad", "calling a crisis hotline for help",
                   "comforting a grieving friend", "recovering in a hospital bed", "visiting a patient with flowers"]}),
    ("{v} about {h}", {"v": ["a documentary", "a history lesson", "a museum exhibit", "a school presentation",
                            "a lecture", "a news report"],
                      "h": ["world war two", "the holocaust", "the civil rights movement", "the vietnam war",
                            "the crusades", "the atomic bomb", "the 9/11 memorial", "the french revolution",
                            "ancient roman gladiators", "the cold war", "a murder trial", "a bombing investigation",
                            "a school shooting and gun laws", "eating disorders recovery",
                            "terrorism and security", "racism in history"]}),
    ("{v} {w}", {"v": ["looking at", "photographing", "cleaning", "displaying", "restoring"],
                 "w": ["old rifles in a museum", "samurai swords", "ww1 helmets", "a medieval suit of armour",
                       "antique pistols in a glass case", "a decommissioned tank", "cannons at a fort"]}),
    ("{v} {m}", {"v": ["applying fake blood", "wearing zombie makeup", "playing a slasher villain",
                       "rigging a fake explosion", "performing a stunt fall onto airbags", "acting in a war movie",
                       "dressed as a vampire", "screaming in a haunted house", "filming a horror movie scene",
                       "playing a gangster in a film", "rehearsing a stage sword fight", "wearing a skeleton costume"],
                 "m": ["", "on a film set", "for halloween", "at a costume party", "behind the scenes",
                       "for a school play"]}),
    ("{v} {g} {m}", {"v": ["playing", "streaming", "winning at", "losing at"],
                     "g": ["a shooter video game", "fortnite", "call of duty", "a zombie video game", "paintball",
                           "laser tag", "airsoft", "a nerf battle", "chess", "a board game", "capture the flag"],
                     "m": ["", "with friends", "on a console", "and laughing", "at a tournament"]}),
    ("{v} {x}", {"v": ["a chemistry teacher demonstrating", "students watching", "a scientist explaining",
                       "kids making"],
                 "x": ["a flame test", "an exothermic reaction", "elephant toothpaste", "a baking soda volcano",
                       "electrolysis of water", "a burning magnesium ribbon", "slime", "a rainbow density column"]}),
    ("{x}", {"x": ["fireworks exploding over a harbour", "a controlled demolition of an old tower",
                   "a quarry crew blasting rock", "a volcano erupting", "lightning striking a tree",
                   "a rocket launch", "a bonfire at a beach party", "a campfire with marshmallows",
                   "a bath bomb fizzing in a tub", "a science fair with model rockets"]}),
    ("{who} {v} {toy}", {"who": ["children", "kids", "a boy", "a girl", "a father and son"],
                         "v": ["playing with", "firing", "collecting", "building"],
                         "toy": ["water guns", "toy swords", "nerf blasters", "toy soldiers", "a toy tank",
                                 "a lego battleship", "a cap gun", "a foam bow"]}),
    ("{who} {v} for {c}", {"who": ["people", "activists", "students", "workers", "nurses", "grandparents"],
                           "v": ["marching", "holding signs", "chanting peacefully", "rallying", "striking"],
                           "c": ["climate action", "workers' rights", "peace", "voting rights", "lgbtq rights",
                                 "refugee rights", "better pay", "gun control"]}),
    ("{x}", {"x": ["a candlelight vigil for shooting victims", "a pride parade with rainbow flags",
                   "a memorial service for soldiers", "veterans saluting at a memorial",
                   "soldiers marching in a parade", "a soldier coming home and hugging family",
                   "police officers directing traffic", "a police dog training session", "a military band",
                   "a navy ship at sea", "firefighters rescuing a cat", "a paramedic helping an injured cyclist"]}),
    ("{who} {v}", {"who": ["a muslim family", "a jewish family", "a black family", "a gay couple",
                           "a lesbian couple", "immigrants", "refugees", "an indigenous community", "a sikh family",
                           "a hindu family", "a chinese family", "a mexican family", "a trans woman",
                           "a disabled athlete", "an arab family", "catholic nuns", "roma musicians"],
                   "v": ["celebrating a holiday", "at a wedding", "having a barbecue", "cooking together",
                         "dancing at a festival", "at a citizenship ceremony", "praying peacefully",
                         "laughing at a picnic", "playing music", "visiting a museum"]}),
    ("{x}", {"x": ["a life drawing class sketching a model",
                   "an anatomy drawing of the human heart", "a tattoo artist inking a sleeve", "a medical diagram of the skeleton",
                   "a mother breastfeeding her baby", "a couple kissing at their wedding", "a couple cuddling on a couch",
                   "a woman in a bikini on a beach", "a man in swim trunks at a pool", "a baby taking a bath",
                   "a romantic dinner by candlelight", "a couple holding hands in bed, fully clothed",
                   "a figure skater in a sparkly costume", "a ballet dancer stretching"]}),
    ("{v} {o}", {"v": ["cutting", "hanging", "shooting", "killing", "bombing", "crushing", "burning"],
                 "o": ["time", "the grass", "a cake", "laundry on a line", "christmas lights", "a painting",
                       "paper snowflakes", "a photo of the sunset", "it at a karaoke night", "a stand-up set",
                       "a workout at the gym", "leaves in the garden", "a candle", "the ribbon at an opening"]}),
    ("jumping {x}", {"x": ["off a diving board", "into a lake", "on a trampoline", "over a puddle",
                          "from a plane with a parachute", "off a pier into the sea", "for joy", "rope"]}),
    ("{x}", {"x": ["crying at a sad movie", "feeling sad and hugging a friend", "breaking their fast at iftar",
                   "meal prepping healthy food", "running a marathon", "lifting weights", "sleeping on a couch",
                   "a dog chewing a bone", "a cat hunting a toy mouse", "a lion eating its prey in the wild",
                   "a hunter in orange walking through the woods", "fishing and gutting a trout",
                   "a butcher shop with hanging meat", "a farmer feeding pigs", "a deer in a misty forest",
                   "a skateboarder falling and getting up", "a rollercoaster dropping", "a horse race finish",
                   "timelapse of clouds over mountains", "a city street in the rain", "a cozy cabin in the snow",
                   "a busy market in the morning", "a train crossing a bridge", "a dancer on a stage"]}),
]


def harmful():
    return {cat: expand(specs) for cat, specs in HARM.items()}


def harmful_groups():
    """Per category, the phrases by spec (see `benign_groups`)."""
    return {cat: [expand([spec]) for spec in specs] for cat, specs in HARM.items()}


def benign():
    return expand(BENIGN_X)


def benign_groups():
    """The benign phrases by spec, so a sampler can weigh each topic the
    same however many combinations it has."""
    return [expand([spec]) for spec in BENIGN_X]
